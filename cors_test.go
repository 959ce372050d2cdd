package gateway

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// benchCORS is a handler with every option, as a typical API sets it.
func benchCORS(b *testing.B) *CORS {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	b.Cleanup(cancel)
	h := &CORS{
		AllowOrigins:     []string{"https://app.example.com", "https://*.example.org"},
		AllowMethods:     []string{"GET", "POST", "PUT", "DELETE"},
		AllowHeaders:     []string{"Authorization", "Content-Type"},
		ExposeHeaders:    []string{"X-Request-Id"},
		AllowCredentials: true,
		MaxAge:           caddy.Duration(10 * time.Minute),
	}
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	return h
}

// BenchmarkCORSActual measures an actual request from an allowed origin
// whose response the next handler writes, through the pooled writer that
// sets the fields.
func BenchmarkCORSActual(b *testing.B) {
	h := benchCORS(b)
	body := []byte(`{"ok":true}`)
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) error {
		w.WriteHeader(http.StatusOK)
		_, err := w.Write(body)
		return err
	})
	for _, origin := range []string{"https://app.example.com", "https://a.b.example.org"} {
		b.Run(origin[8:], func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				r := newCaddyRequest("http://api.example.com/items")
				r.Header.Set("Origin", origin)
				w := &discardWriter{h: make(http.Header, 8)}
				for pb.Next() {
					clear(w.h)
					if err := h.ServeHTTP(w, r, next); err != nil {
						b.Fatal(err)
					}
					if w.h.Get("Access-Control-Allow-Origin") != origin {
						b.Fatalf("no Access-Control-Allow-Origin: %v", w.h)
					}
				}
			})
		})
	}
}

// BenchmarkCORSPreflight measures an allowed preflight, answered by the
// handler.
func BenchmarkCORSPreflight(b *testing.B) {
	h := benchCORS(b)
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		b.Fatal("a preflight reached the next handler")
		return nil
	})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := newCaddyRequest("http://api.example.com/items")
		r.Method = http.MethodOptions
		r.Header.Set("Origin", "https://app.example.com")
		r.Header.Set("Access-Control-Request-Method", "PUT")
		r.Header.Set("Access-Control-Request-Headers", "authorization,content-type")
		w := &discardWriter{h: make(http.Header, 8)}
		for pb.Next() {
			clear(w.h)
			if err := h.ServeHTTP(w, r, next); err != nil {
				b.Fatal(err)
			}
			if w.h.Get("Access-Control-Allow-Methods") == "" {
				b.Fatalf("preflight refused: %v", w.h)
			}
		}
	})
}
