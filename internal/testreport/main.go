// Command testreport reads the output of go test -json and reports as it
// goes: each package when it starts and when it ends, the output of every
// test that fails, and at the end one line of totals, such as
// "412 passed, 0 failed, 3 skipped". test.sh pipes the suite through it so
// that a long first run shows where it is. It exits 1 when anything failed,
// a package's build included.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

func main() {
	t := summarize(os.Stdin, os.Stdout)
	fmt.Println(t)
	if !t.ok() {
		os.Exit(1)
	}
}

// event is one line of go test -json (see go doc test2json), or a
// build-output event of Go 1.24 and later, which prints a compiler's
// complaint; the package's fail event follows it.
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

// totals counts the tests and packages that ended.
type totals struct {
	passed, failed, skipped int
	failedPackages          []string // a package that failed outside a test, or did not build
}

func (t totals) ok() bool { return t.failed == 0 && len(t.failedPackages) == 0 }

func (t totals) String() string {
	s := fmt.Sprintf("%d passed, %d failed", t.passed, t.failed)
	if t.skipped > 0 {
		s += fmt.Sprintf(", %d skipped", t.skipped)
	}
	if len(t.failedPackages) > 0 {
		s += fmt.Sprintf("; failed packages: %s", strings.Join(t.failedPackages, " "))
	}
	return s
}

// summarize reads events from r until it ends, writing progress to w, and
// returns the totals. A line that is not an event is copied through.
func summarize(r io.Reader, w io.Writer) totals {
	var t totals
	output := map[string]*strings.Builder{} // per package and test, until it ends
	failedTests := map[string]bool{}        // packages with a failed test
	key := func(e event) string { return e.Package + "\x00" + e.Test }
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			fmt.Fprintf(w, "%s\n", line)
			continue
		}
		switch e.Action {
		case "build-output":
			fmt.Fprint(w, e.Output)
		case "start":
			fmt.Fprintf(w, "testing %s\n", e.Package)
		case "output":
			b := output[key(e)]
			if b == nil {
				b = new(strings.Builder)
				output[key(e)] = b
			}
			b.WriteString(e.Output)
		case "pass", "fail", "skip":
			b := output[key(e)]
			delete(output, key(e))
			if e.Test != "" {
				t.count(e.Action)
				if e.Action == "fail" {
					failedTests[e.Package] = true
					if b != nil {
						fmt.Fprint(w, b.String())
					}
				}
				continue
			}
			switch e.Action {
			case "fail":
				if !failedTests[e.Package] {
					// Failed outside any test: a panic in TestMain, a
					// timeout, a package that did not build.
					if b != nil {
						fmt.Fprint(w, b.String())
					}
					t.failedPackages = append(t.failedPackages, e.Package)
				}
				fmt.Fprintf(w, "FAIL %s (%s)\n", e.Package, elapsed(e.Elapsed))
			case "pass":
				fmt.Fprintf(w, "ok   %s (%s)\n", e.Package, elapsed(e.Elapsed))
			case "skip":
				fmt.Fprintf(w, "--   %s (no tests)\n", e.Package)
			}
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(w, "testreport: reading go test output: %v\n", err)
		t.failedPackages = append(t.failedPackages, "(input)")
	}
	return t
}

func (t *totals) count(action string) {
	switch action {
	case "pass":
		t.passed++
	case "fail":
		t.failed++
	case "skip":
		t.skipped++
	}
}

func elapsed(s float64) time.Duration {
	return time.Duration(s * float64(time.Second)).Round(100 * time.Millisecond)
}
