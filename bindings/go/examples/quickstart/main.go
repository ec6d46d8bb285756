// Quickstart: a pool of two warm `bc -lq` processes (or `cat` where bc is missing),
// driven from Go. Build the library first, from the repository root:
//
//	make build
//	cd bindings/go && PKG_CONFIG_PATH=$PWD/../../target/pkgconfig go run ./examples/quickstart
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os/exec"
	"time"

	toolpool "github.com/toolpool/toolpool/bindings/go"
)

func main() {
	fmt.Println("toolpool", toolpool.Version())

	command := []string{"bc", "-lq"}
	if _, err := exec.LookPath("bc"); err != nil {
		command = []string{"cat"} // no bc here: an echo tool shows the same API
	}
	pool, err := toolpool.NewFromSpec(toolpool.Spec{Command: command, Count: 2})
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	// Requests: one line in, one line out, on whichever instance is free.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, expr := range []string{"2^64", "scale=20; 4*a(1)", "6*7"} {
		reply, err := pool.Request(ctx, expr)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%-18s = %s\n", expr, reply)
	}

	// Raw line I/O to one instance: bc keeps its state between lines.
	if err := pool.Send(1, "x = 10"); err != nil {
		log.Fatal(err)
	}
	if err := pool.Send(1, "x * x"); err != nil {
		log.Fatal(err)
	}
	line, err := pool.ReadLine(1, 5*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("instance 1: x * x =", line)

	// Errors are typed: test the kind with errors.Is, read toolpool's message in Error().
	if _, err := pool.ReadLine(0, 100*time.Millisecond); errors.Is(err, toolpool.ErrTimeout) {
		fmt.Println("reading an idle instance:", err)
	}

	health, err := pool.Health()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("health: %d total, %d alive, %d dead\n", health.Total, health.Alive, health.Dead)
}
