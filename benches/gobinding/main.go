// Command gobinding is toolpool's Go binding (bindings/go) driven the way benches/gopool
// drives the plain Go pool, so that benches/pool.rs can set the two side by side: the same
// C echo child, the same line, the same JSON output.
//
//	gobinding lat  CHILD LINE WARMUP N             one caller, one instance: per-call samples
//	gobinding tput CHILD LINE WARMUP N INSTANCES   one goroutine per instance, N calls each,
//	                                               routed Requests over INSTANCES instances
//
// Prints one JSON object: {"samples_us": [...], "wall_us": W, "calls": C}, where wall_us runs
// from the common start (after every caller's warm-up) to the last caller's end. Built with
// cgo against the uninstalled target/pkgconfig/toolpool.pc (PKG_CONFIG_PATH).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	toolpool "github.com/toolpool/toolpool/bindings/go"
)

func die(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gobinding: "+format+"\n", args...)
	os.Exit(1)
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		die("bad number %q", s)
	}
	return n
}

func main() {
	if len(os.Args) < 6 {
		die("usage: gobinding lat|tput CHILD LINE WARMUP N [INSTANCES]")
	}
	mode, child, line := os.Args[1], os.Args[2], os.Args[3]
	warmup, n := atoi(os.Args[4]), atoi(os.Args[5])
	callers := 1
	if mode == "tput" {
		if len(os.Args) < 7 {
			die("tput needs INSTANCES")
		}
		callers = atoi(os.Args[6])
	} else if mode != "lat" {
		die("unknown mode %q", mode)
	}
	spec, _ := json.Marshal(map[string]any{"command": []string{child}, "count": callers})
	pool, err := toolpool.New(string(spec))
	if err != nil {
		die("start: %v", err)
	}
	defer pool.Close()
	ctx := context.Background()
	samples := make([][]float64, callers)
	var ready, finished sync.WaitGroup
	gate := make(chan struct{})
	for i := 0; i < callers; i++ {
		ready.Add(1)
		finished.Add(1)
		go func(i int) {
			defer finished.Done()
			check := func(got string, err error) {
				if err != nil || got != line {
					die("request: %q %v", got, err)
				}
			}
			for k := 0; k < warmup; k++ {
				check(pool.Request(ctx, line))
			}
			ready.Done()
			<-gate
			s := make([]float64, 0, n)
			for k := 0; k < n; k++ {
				t := time.Now()
				got, err := pool.Request(ctx, line)
				s = append(s, float64(time.Since(t).Nanoseconds())/1e3)
				check(got, err)
			}
			samples[i] = s
		}(i)
	}
	ready.Wait()
	t0 := time.Now()
	close(gate)
	finished.Wait()
	wall := time.Since(t0)
	all := make([]float64, 0, n*callers)
	for _, s := range samples {
		all = append(all, s...)
	}
	out, _ := json.Marshal(map[string]any{
		"samples_us": all,
		"wall_us":    float64(wall.Nanoseconds()) / 1e3,
		"calls":      n * callers,
	})
	fmt.Println(string(out))
}
