package gateway_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-gateway/gateway"
)

var update = flag.Bool("update", false, "rewrite the expected JSON of the adapt fixtures")

// fixtureSeparator divides a fixture's Caddyfile from what it expects.
const fixtureSeparator = "\n----------\n"

func readFixture(t testing.TB, path string) (caddyfile, expected string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	caddyfile, expected, ok := strings.Cut(string(data), fixtureSeparator)
	if !ok {
		t.Fatalf("%s: no %q line", path, strings.TrimSpace(fixtureSeparator))
	}
	return caddyfile, expected
}

func adapt(caddyfile, filename string) ([]byte, error) {
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": filename})
	return out, err
}

// TestAdaptFixtures adapts each testdata/caddyfile_adapt fixture and
// compares the JSON with the one it holds.
func TestAdaptFixtures(t *testing.T) {
	paths, _ := filepath.Glob("testdata/caddyfile_adapt/*.caddyfiletest")
	if len(paths) == 0 {
		t.Fatal("no adapt fixtures")
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			caddyfile, expected := readFixture(t, path)
			out, err := adapt(caddyfile, "Caddyfile")
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, out, "", "\t"); err != nil {
				t.Fatal(err)
			}
			got := pretty.String() + "\n"
			if *update {
				os.WriteFile(path, []byte(caddyfile+fixtureSeparator+got), 0o644)
				return
			}
			if got != expected {
				t.Errorf("adapted JSON differs.\ngot:\n%s\nwant:\n%s", got, expected)
			}
		})
	}
}

// TestAdaptErrors adapts each testdata/caddyfile_errors fixture, which
// must fail with a message holding every line the fixture expects.
func TestAdaptErrors(t *testing.T) {
	paths, _ := filepath.Glob("testdata/caddyfile_errors/*.caddyfiletest")
	if len(paths) == 0 {
		t.Fatal("no error fixtures")
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			caddyfile, expected := readFixture(t, path)
			_, err := adapt(caddyfile, "Caddyfile")
			if err == nil {
				t.Fatal("adapt succeeded")
			}
			for _, want := range strings.Split(strings.TrimSpace(expected), "\n") {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
		})
	}
}

// FuzzCaddyfile feeds arbitrary text to the Caddyfile parsers of our
// directives and global option; they must return, never panic.
func FuzzCaddyfile(f *testing.F) {
	paths, _ := filepath.Glob("testdata/caddyfile_*/*.caddyfiletest")
	for _, path := range paths {
		caddyfile, _ := readFixture(f, path)
		f.Add(caddyfile)
	}
	f.Add("{\n\tcache_pool {\n\t\tcache a {\n\t\t\tmax_size\n\t\t}\n\t}\n}\n:80 {\n\tcache_write a {\n\t\tstatus x\n\t}\n}\n")
	f.Fuzz(func(t *testing.T, caddyfile string) {
		adapt(caddyfile, "Caddyfile")
	})
}
