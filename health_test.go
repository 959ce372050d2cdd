package gateway

import (
	"context"
	"net/http"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// BenchmarkHealthProbe measures a probe answered from the cached check,
// as every probe but one in a storm is.
func BenchmarkHealthProbe(b *testing.B) {
	for _, mode := range []string{"live", "ready", ""} {
		name := mode
		if name == "" {
			name = "report"
		}
		b.Run(name, func(b *testing.B) {
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			h := &Health{Mode: mode}
			if err := h.Provision(ctx); err != nil {
				b.Fatal(err)
			}
			next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
				b.Fatal("health called next")
				return nil
			})
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				r := newCaddyRequest("http://gw.example.com/health")
				w := &discardWriter{h: make(http.Header, 4)}
				for pb.Next() {
					if err := h.ServeHTTP(w, r, next); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
