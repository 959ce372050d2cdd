// Package redistest starts a real redis-server on a free loopback port
// for a test, and stops it when the test ends.
package redistest

import (
	"bufio"
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
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs redis-server for the test. Without redis-server on the PATH
// the test is skipped, except under CI=true, where that is a failure.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server is not installed; ./test.sh installs it")
		}
		t.Skip("redis-server is not installed; ./test.sh installs it")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &Server{Addr: addr, URL: "redis://" + addr + "/0", t: t, dir: t.TempDir()}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start() {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.Addr)
	s.cmd = exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--loglevel", "warning")
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
	conn, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Second))
	fmt.Fprint(conn, "PING\r\n")
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("redis answered %q", line)
	}
	return nil
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
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(conn, "INFO commandstats\r\n")
	r := bufio.NewReader(conn)
	header, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	var size int
	if _, err := fmt.Sscanf(header, "$%d", &size); err != nil {
		return 0, fmt.Errorf("INFO commandstats answered %q", header)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(r, body); err != nil {
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
