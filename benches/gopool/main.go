// Command gopool is the plain Go pool that benches/pool.rs measures toolpool against: exec,
// goroutines and channels, nothing else. Each instance is one child process with a writer
// goroutine (requests from a channel to the child's stdin) and a reader goroutine (stdout lines
// to the reply channel of the oldest pending call). A call sends its line with its reply
// channel and waits on that channel.
//
//	gopool lat  CHILD LINE WARMUP N             one caller, one instance: per-call samples
//	gopool tput CHILD LINE WARMUP N INSTANCES   one goroutine per instance, N calls each
//
// Prints one JSON object: {"samples_us": [...], "wall_us": W, "calls": C}, where wall_us runs
// from the common start (after every caller's warm-up) to the last caller's end.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"
)

type call struct {
	line  []byte
	reply chan []byte
}

type instance struct {
	cmd  *exec.Cmd
	reqs chan call
	done chan struct{}
}

func start(path string) (*instance, error) {
	cmd := exec.Command(path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	in := &instance{cmd: cmd, reqs: make(chan call, 64), done: make(chan struct{})}
	pending := make(chan chan []byte, 64)
	go func() {
		for c := range in.reqs {
			pending <- c.reply
			if _, err := stdin.Write(c.line); err != nil {
				break
			}
		}
		stdin.Close()
		close(pending)
	}()
	go func() {
		defer close(in.done)
		r := bufio.NewReader(stdout)
		for reply := range pending {
			l, err := r.ReadBytes('\n')
			if err != nil {
				reply <- nil
				continue
			}
			reply <- l
		}
		_, _ = io.Copy(io.Discard, r)
	}()
	return in, nil
}

func (in *instance) do(line []byte, reply chan []byte) []byte {
	in.reqs <- call{line, reply}
	return <-reply
}

func (in *instance) close() {
	close(in.reqs)
	<-in.done
	_ = in.cmd.Wait()
}

func die(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gopool: "+format+"\n", args...)
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
		die("usage: gopool lat|tput CHILD LINE WARMUP N [INSTANCES]")
	}
	mode, child := os.Args[1], os.Args[2]
	line := []byte(os.Args[3] + "\n")
	warmup, n := atoi(os.Args[4]), atoi(os.Args[5])
	instances := 1
	if mode == "tput" {
		if len(os.Args) < 7 {
			die("tput needs INSTANCES")
		}
		instances = atoi(os.Args[6])
	} else if mode != "lat" {
		die("unknown mode %q", mode)
	}
	pool := make([]*instance, instances)
	for i := range pool {
		in, err := start(child)
		if err != nil {
			die("start %s: %v", child, err)
		}
		pool[i] = in
	}
	samples := make([][]float64, instances)
	var ready, finished sync.WaitGroup
	startGate := make(chan struct{})
	for i := range pool {
		ready.Add(1)
		finished.Add(1)
		go func(i int) {
			defer finished.Done()
			in, reply := pool[i], make(chan []byte, 1)
			check := func(got []byte) {
				if !bytes.Equal(got, line) {
					die("echo mismatch: %q", got)
				}
			}
			for k := 0; k < warmup; k++ {
				check(in.do(line, reply))
			}
			ready.Done()
			<-startGate
			s := make([]float64, 0, n)
			for k := 0; k < n; k++ {
				t := time.Now()
				got := in.do(line, reply)
				s = append(s, float64(time.Since(t).Nanoseconds())/1e3)
				check(got)
			}
			samples[i] = s
		}(i)
	}
	ready.Wait()
	t0 := time.Now()
	close(startGate)
	finished.Wait()
	wall := time.Since(t0)
	for _, in := range pool {
		in.close()
	}
	all := make([]float64, 0, n*instances)
	for _, s := range samples {
		all = append(all, s...)
	}
	out, _ := json.Marshal(map[string]any{
		"samples_us": all,
		"wall_us":    float64(wall.Nanoseconds()) / 1e3,
		"calls":      n * instances,
	})
	fmt.Println(string(out))
}
