// Package redistest starts a real redis-server on a free loopback port
// for a test, and stops it when the test ends.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is a redis-server that a test started.
type Server struct {
	Addr string
	URL  string
	t    testing.TB
	dir  string
	args []string // beyond the port and the defaults
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs redis-server for the test. Without redis-server on the PATH
// the test is skipped, except under CI=true, where that is a failure.
func Start(t testing.TB) *Server {
	t.Helper()
	return startOn(t, freePort(t, 0), nil)
}

// startOn runs redis-server on a port with more arguments.
func startOn(t testing.TB, addr string, args []string) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server is not installed; ./test.sh installs it")
		}
		t.Skip("redis-server is not installed; ./test.sh installs it")
	}
	s := &Server{Addr: addr, URL: "redis://" + addr + "/0", t: t, dir: t.TempDir(), args: args}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

// freePort returns a free loopback address whose port p also leaves p+gap
// free (a cluster node's bus listens on its port + 10000).
func freePort(t testing.TB, gap int) string {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().(*net.TCPAddr)
		if gap == 0 {
			l.Close()
			return addr.String()
		}
		if addr.Port+gap > 65535 {
			l.Close()
			continue
		}
		other, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", addr.Port+gap))
		l.Close()
		if err != nil {
			continue
		}
		other.Close()
		return addr.String()
	}
	t.Fatal("no free pair of ports")
	return ""
}

func (s *Server) start() {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.Addr)
	args := []string{"--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--loglevel", "warning"}
	if len(s.args) > 0 && s.args[0] == "--sentinel" {
		// A sentinel reads, and rewrites, its own config file.
		conf := s.dir + "/sentinel.conf"
		if err := os.WriteFile(conf, []byte(strings.Join(s.args[1:], "\n")+"\n"), 0o600); err != nil {
			s.t.Fatal(err)
		}
		args = []string{conf, "--sentinel", "--port", port, "--bind", "127.0.0.1", "--dir", s.dir, "--loglevel", "warning"}
	} else {
		args = append(args, s.args...)
	}
	s.cmd = exec.Command("redis-server", args...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(s.cmd, s.done)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if s.ping() == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("redis-server on %s did not answer", s.Addr)
}

func (s *Server) ping() error {
	reply, err := s.do("PING")
	if err == nil && reply != "PONG" {
		err = fmt.Errorf("redis answered %q", reply)
	}
	return err
}

// Do runs one command on the server and returns its reply: a status, an
// integer or a bulk string, as text. An error reply fails the test.
func (s *Server) Do(args ...string) string {
	s.t.Helper()
	reply, err := s.do(args...)
	if err != nil {
		s.t.Fatalf("%s on %s: %v", strings.Join(args, " "), s.Addr, err)
	}
	return reply
}

func (s *Server) do(args ...string) (string, error) { return do(s.Addr, args...) }

// do runs one command on the Redis at addr.
func do(addr string, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(conn, "$%d\r\n%s\r\n", len(a), a)
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	switch {
	case line == "":
		return "", errors.New("empty reply")
	case line[0] == '+' || line[0] == ':':
		return line[1:], nil
	case line[0] == '-':
		return "", errors.New(line[1:])
	case line[0] == '$':
		var size int
		if _, err := fmt.Sscanf(line, "$%d", &size); err != nil || size < 0 {
			return "", err
		}
		body := make([]byte, size+2)
		if _, err := io.ReadFull(r, body); err != nil {
			return "", err
		}
		return string(body[:size]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

// Calls returns how many times the server ran each of the commands, from
// INFO commandstats: Calls("evalsha", "eval") counts script calls.
func (s *Server) Calls(commands ...string) int {
	s.t.Helper()
	n, err := CommandCalls(s.Addr, commands...)
	if err != nil {
		s.t.Fatal(err)
	}
	return n
}

// CommandCalls asks the Redis at addr how many times it ran each of the
// commands, from INFO commandstats, and returns the sum.
func CommandCalls(addr string, commands ...string) (int, error) {
	body, err := do(addr, "INFO", "commandstats")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(string(body), "\r\n") {
		for _, c := range commands {
			if rest, ok := strings.CutPrefix(line, "cmdstat_"+c+":calls="); ok {
				var calls int
				fmt.Sscanf(rest, "%d", &calls)
				n += calls
			}
		}
	}
	return n, nil
}

// Stop stops the server; a stopped server stays stopped.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart starts the server again on the same port, empty.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// Pause stops the server's process with SIGSTOP: it keeps its port and
// accepts connections, but answers nothing, like a hung Redis. The test's
// end resumes it, so that it can be stopped.
func (s *Server) Pause() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(s.Resume)
}

// Resume continues a paused server with SIGCONT.
func (s *Server) Resume() {
	if s.cmd != nil {
		s.cmd.Process.Signal(syscall.SIGCONT)
	}
}
