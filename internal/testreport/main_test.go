package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSummarize runs go test -json on a small module whose tests pass,
// fail and skip, one of whose packages does not build, and one of whose
// packages fails outside any test.
func TestSummarize(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"go.mod": "module example.com/m\n\ngo 1.22\n",
		"a/a_test.go": `package a

import "testing"

func TestPass(t *testing.T) {}
func TestFail(t *testing.T) { t.Log("the reason it failed"); t.FailNow() }
func TestSkip(t *testing.T) { t.Skip("not here") }
func TestParent(t *testing.T) {
	t.Run("passes", func(t *testing.T) {})
	t.Run("fails", func(t *testing.T) { t.Error("a subtest's reason") })
}
`,
		"b/b_test.go": "package b\n\nimport \"testing\"\n\nfunc TestB(t *testing.T) { undefined() }\n",
		"c/c_test.go": "package c\n\nimport (\n\t\"os\"\n\t\"testing\"\n)\n\nfunc TestMain(m *testing.M) { println(\"setup broke\"); os.Exit(3) }\n",
		"d/d_test.go": "package d\n\nimport \"testing\"\n\nfunc TestD(t *testing.T) {}\n",
		"e/e.go":      "package e\n",
	}
	for name, text := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("go", "test", "-json", "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
	stream, err := cmd.Output()
	if err == nil {
		t.Fatal("go test passed a module with failing tests")
	}
	var out bytes.Buffer
	got := summarize(bytes.NewReader(stream), &out)
	report := out.String()
	t.Logf("report:\n%s", report)

	// Passed: TestPass, TestParent/passes, TestD. Failed: TestFail,
	// TestParent/fails, TestParent. Skipped: TestSkip.
	if got.passed != 3 || got.failed != 3 || got.skipped != 1 {
		t.Errorf("counted %d passed, %d failed, %d skipped; want 3, 3, 1", got.passed, got.failed, got.skipped)
	}
	if want := []string{"example.com/m/b", "example.com/m/c"}; strings.Join(got.failedPackages, " ") != strings.Join(want, " ") {
		t.Errorf("failed packages %q, want %q", got.failedPackages, want)
	}
	if got.ok() {
		t.Error("a failing run reported ok")
	}
	for _, want := range []string{
		"testing example.com/m/a\n",
		"the reason it failed",
		"a subtest's reason",
		"undefined: undefined", // the compiler's complaint
		"setup broke",          // output of a package that failed outside its tests
		"FAIL example.com/m/a (",
		"ok   example.com/m/d (",
		"--   example.com/m/e (no tests)",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	if strings.Contains(report, "TestPass") {
		t.Error("the report shows the output of a test that passed")
	}
	if s := got.String(); s != "3 passed, 3 failed, 1 skipped; failed packages: example.com/m/b example.com/m/c" {
		t.Errorf("totals line %q", s)
	}
}

func TestTotalsLine(t *testing.T) {
	if s := (totals{passed: 5}).String(); s != "5 passed, 0 failed" {
		t.Errorf("got %q", s)
	}
	if !(totals{passed: 5, skipped: 1}).ok() {
		t.Error("a run with skips only is not ok")
	}
}
