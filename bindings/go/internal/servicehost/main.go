// Command servicehost is one Go host process of the shared-limit test
// (bindings/python/tests/test_service.py): it hammers the tools of a `toolpool serve`
// service for a while and prints what happened as one JSON line.
//
//	servicehost SOCKET NAME TOOLS SECONDS
//
// TOOLS is a comma-separated list of tool ids whose replies carry the prefix "<tool>:"
// (the test tool's --prefix). Round r sends a burst of requests to tool
// TOOLS[(k + r) % n], k being the number in NAME, each carrying a nonce that must come
// back in its own reply. The Python twin is bindings/python/tests/apps/hammer.py.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	toolpool "github.com/toolpool/toolpool/bindings/go"
)

const (
	burst   = 5
	timeout = 60 * time.Second
)

type failure struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

type mismatch struct {
	Sent string `json:"sent"`
	Tool string `json:"tool"`
	Got  string `json:"got"`
}

type report struct {
	Name   string     `json:"name"`
	OK     int        `json:"ok"`
	Errors []failure  `json:"errors"`
	Wrong  []mismatch `json:"wrong"`
}

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: servicehost SOCKET NAME TOOLS SECONDS")
		os.Exit(2)
	}
	socket, name, tools := os.Args[1], os.Args[2], strings.Split(os.Args[3], ",")
	seconds, err := strconv.ParseFloat(os.Args[4], 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, "SECONDS:", err)
		os.Exit(2)
	}
	start, _ := strconv.Atoi(strings.TrimLeft(name, "abcdefghijklmnopqrstuvwxyz-"))
	if err := run(socket, name, tools, start, time.Duration(seconds*float64(time.Second))); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(socket, name string, tools []string, start int, d time.Duration) error {
	client, err := toolpool.Connect(socket)
	if err != nil {
		return err
	}
	defer client.Close()
	pools := map[string]*toolpool.Pool{}
	for _, t := range tools {
		p, err := client.Pool(t)
		if err != nil {
			return err
		}
		defer p.Close()
		pools[t] = p
	}
	rep := report{Name: name, Errors: []failure{}, Wrong: []mismatch{}}
	until := time.Now().Add(d)
	for r := 0; time.Now().Before(until); r++ {
		tool := tools[(start+r)%len(tools)]
		for k := 0; k < burst; k++ {
			nonce := fmt.Sprintf("%s-%d-%d", name, r, k)
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			reply, err := pools[tool].Request(ctx, "delay:2:"+nonce)
			cancel()
			var te *toolpool.Error
			switch {
			case errors.As(err, &te):
				rep.Errors = append(rep.Errors, failure{Status: te.Code.String(), Message: te.Message})
			case err != nil:
				rep.Errors = append(rep.Errors, failure{Status: "go", Message: err.Error()})
			case reply == tool+":"+nonce:
				rep.OK++
			default:
				rep.Wrong = append(rep.Wrong, mismatch{Sent: nonce, Tool: tool, Got: reply})
			}
		}
	}
	return json.NewEncoder(os.Stdout).Encode(rep)
}
