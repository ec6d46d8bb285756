package toolpool_test

import (
	"context"
	"fmt"

	toolpool "github.com/toolpool/toolpool/bindings/go"
)

// readmeSnippet is the Go snippet of the repository's README ("The same five lines in four
// languages"): bindings/python/tests/test_docs.py checks that the README shows exactly the
// lines between BEGIN README and END README.
func readmeSnippet(ctx context.Context) error {
	// BEGIN README
	pool, err := toolpool.New(`{"command": ["bc", "-q"], "count": 3}`)
	if err != nil {
		return err
	}
	defer pool.Close()
	reply, err := pool.Request(ctx, "6*7")
	health, _ := pool.Health()
	fmt.Println(reply, err, health.Alive)
	// END README
	return nil
}

// A pool of three bc processes, one request, and the health counts.
func Example() {
	if err := readmeSnippet(context.Background()); err != nil {
		fmt.Println(err)
	}
	// Output: 42 <nil> 3
}
