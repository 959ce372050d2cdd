package gateway_test

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// walkStep is one command of the README's "See it work", with what its
// output must show.
type walkStep struct {
	cmd   string
	want  []string // regular expressions the output must match
	check func(out string, earlier []string) error
}

// madeAt is the time the demo upstream wrote into a body.
var madeAt = regexp.MustCompile(`"made_at":"[^"]+"`)

func sameBodyAs(step int) func(string, []string) error {
	return func(out string, earlier []string) error {
		if got, first := madeAt.FindString(out), madeAt.FindString(earlier[step]); got == "" || got != first {
			return fmt.Errorf("body made at %q, want the stored one of step %d, %q", got, step, first)
		}
		return nil
	}
}

var walkthrough = []walkStep{
	{cmd: `curl -i 'localhost:8080/products/1?page=2'`,
		want: []string{`(?m)^HTTP/1.1 200`, `(?m)^Cache-Status: products; fwd=uri-miss; fwd-status=200; stored\r$`}},
	{cmd: `curl -i 'localhost:8080/products/1?page=2'`,
		want:  []string{`(?m)^Cache-Status: products; hit; ttl=(30|29)\r$`, `(?m)^Age: \d+\r$`, `(?m)^Etag: "`},
		check: sameBodyAs(0)},
	{cmd: `curl -i 'localhost:8080/products/1?page=2&utm=x'`,
		want:  []string{`(?m)^Cache-Status: products; hit;`},
		check: sameBodyAs(0)},
	{cmd: `curl -i -H 'If-None-Match: *' 'localhost:8080/products/1?page=2'`,
		want: []string{`(?m)^HTTP/1.1 304 Not Modified\r$`}},
	{cmd: `curl -i -X POST localhost:8080/products/1`,
		want: []string{`(?m)^HTTP/1.1 200`, `(?m)^Cache-Status: products; fwd=method\r$`}},
	{cmd: `curl -i 'localhost:8080/products/1?page=2'`,
		want: []string{`(?m)^Cache-Status: products; fwd=uri-miss; fwd-status=200; stored\r$`}},
	{cmd: `curl -s localhost:2019/cache/`,
		want: []string{`^\{"caches":\[\{"name":"products","entries":1,.*"hits":3,"misses":2,"stored":2,`}},
	{cmd: `curl -s -X DELETE localhost:2019/cache/products`,
		want: []string{`"flushed":\["products"\]`}},
	{cmd: `curl -s -X DELETE localhost:2019/rate_limit/per_client`,
		want: []string{`^\{"nodes":1,"reset_keys":1,"zone":"per_client"\}`}},
	{cmd: `for i in $(seq 12); do curl -s -o /dev/null -D - localhost:8080/ | grep -iE '^(HTTP|RateLimit|Retry-After)'; done`,
		check: countdown},
	{cmd: `curl -s localhost:2019/rate_limit/per_client`,
		want: []string{`"algorithm":"sliding_window","events":10,"window":"1m0s","burst":10,"keys":1,"allowed":16,"limited":2,`}},
}

// countdown checks the rate-limit loop: r from 9 to 0 with t between 61
// and 64, as the README says, then two 429s with Retry-After.
func countdown(out string, _ []string) error {
	rl := regexp.MustCompile(`(?m)^Ratelimit: "per_client";r=(\d+);t=(\d+)\r$`)
	matches := rl.FindAllStringSubmatch(out, -1)
	if len(matches) != 12 {
		return fmt.Errorf("%d RateLimit fields, want 12", len(matches))
	}
	for i, m := range matches {
		r, _ := strconv.Atoi(m[1])
		t, _ := strconv.Atoi(m[2])
		if want := max(9-i, 0); r != want || t < 61 || t > 64 {
			return fmt.Errorf("request %d: r=%d t=%d, want r=%d and t in 61..64", i+1, r, t, want)
		}
	}
	if n := strings.Count(out, "HTTP/1.1 200 OK"); n != 10 {
		return fmt.Errorf("%d answers 200, want 10", n)
	}
	retry := regexp.MustCompile(`(?m)^HTTP/1.1 429 Too Many Requests\r\n(?:.*\r\n)*?Retry-After: (\d+)\r$`)
	refusals := retry.FindAllStringSubmatch(out, -1)
	if len(refusals) != 2 {
		return fmt.Errorf("%d refusals with Retry-After, want 2", len(refusals))
	}
	for _, m := range refusals {
		if s, _ := strconv.Atoi(m[1]); s < 55 || s > 64 {
			return fmt.Errorf("Retry-After: %d, want about a minute", s)
		}
	}
	return nil
}

// TestWalkthrough runs the commands of the README's "See it work", as
// written, against Caddy started from the example Caddyfile; only the
// ports change, so that the test runs beside anything else.
func TestWalkthrough(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("curl is needed to follow the README (test.sh installs it)")
		}
		t.Skip("curl is needed to follow the README")
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	cmds := walkthroughCommands(t, string(readme))
	if len(cmds) != len(walkthrough) {
		t.Fatalf("the README's walkthrough has %d commands, the test knows %d:\n%s", len(cmds), len(walkthrough), strings.Join(cmds, "\n"))
	}
	for i, c := range cmds {
		if c != walkthrough[i].cmd {
			t.Fatalf("walkthrough command %d is\n\t%s\nthe test knows\n\t%s", i+1, c, walkthrough[i].cmd)
		}
	}

	ports := freePorts(t, 3)
	g := &gateway{t: t, admin: ports[0], addr: ports[1], dir: t.TempDir(), logs: new(lockedBuffer)}
	g.startEdited("examples/gateway.Caddyfile",
		[2]string{"admin localhost:2019", "admin localhost:" + portOf(g.admin)},
		[2]string{"\n:8080 {", "\n:" + portOf(g.addr) + " {"},
		[2]string{"127.0.0.1:9090", "127.0.0.1:" + portOf(ports[2])},
		[2]string{"\n:9090 {", "\n:" + portOf(ports[2]) + " {"},
	)

	ports2 := strings.NewReplacer("localhost:8080", "localhost:"+portOf(g.addr), "localhost:2019", "localhost:"+portOf(g.admin))
	var outs []string
	for i, step := range walkthrough {
		out, err := exec.Command("bash", "-c", ports2.Replace(step.cmd)).CombinedOutput()
		if err != nil {
			t.Fatalf("step %d: %s: %v\n%s", i+1, step.cmd, err, out)
		}
		outs = append(outs, string(out))
		for _, w := range step.want {
			if !regexp.MustCompile(w).Match(out) {
				t.Errorf("step %d: %s\noutput does not match %s:\n%s", i+1, step.cmd, w, out)
			}
		}
		if step.check != nil {
			if err := step.check(string(out), outs); err != nil {
				t.Errorf("step %d: %s: %v\n%s", i+1, step.cmd, err, out)
			}
		}
	}
}

// walkthroughCommands returns the shell lines of the README's "See it
// work", without their comments.
func walkthroughCommands(t *testing.T, readme string) []string {
	_, section, ok := strings.Cut(readme, "\n### See it work\n")
	if !ok {
		t.Fatal(`README.md has no "See it work" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var cmds []string
	inBlock := false
	for _, line := range strings.Split(section, "\n") {
		switch {
		case line == "```sh":
			inBlock = true
		case line == "```":
			inBlock = false
		case inBlock && strings.TrimSpace(line) != "":
			if i := strings.Index(line, "  #"); i >= 0 {
				line = line[:i]
			}
			cmds = append(cmds, strings.TrimSpace(line))
		}
	}
	return cmds
}
