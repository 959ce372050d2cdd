package gateway

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-gateway/gateway/internal/cors"
)

func init() {
	caddy.RegisterModule(CORS{})
}

// CORS answers CORS preflights itself and adds the CORS response fields to
// actual requests, as the Fetch standard's CORS protocol describes, with
// the option names of Starlette's (FastAPI's) CORSMiddleware.
//
// A preflight (OPTIONS with Origin and Access-Control-Request-Method)
// never reaches the next handler: it is answered 204, with the
// Access-Control-Allow-* fields when its origin, method and headers are
// allowed and without them otherwise. An actual request goes on, with
// Access-Control-Allow-Origin and its companions when its origin is
// allowed; the handler's fields replace any the upstream sets.
type CORS struct {
	// AllowOrigins are the origins allowed: exact origins
	// (scheme://host[:port]), patterns with one wildcard for the
	// subdomains or the port (https://*.example.com, http://localhost:*),
	// or "*" alone for every origin (not with AllowCredentials). A default
	// port is dropped, as browsers leave it out of Origin.
	// Placeholders work: an entry that holds one is expanded for each
	// request and compared whole. Required unless AllowOriginRegex is set.
	AllowOrigins []string `json:"allow_origins,omitempty"`

	// AllowOriginRegex allows the origins the regular expression (RE2
	// syntax) matches whole. It must compile on its own, before it is
	// anchored. Default: none.
	AllowOriginRegex string `json:"allow_origin_regex,omitempty"`

	// AllowMethods are the methods a preflight may ask for, or "*" for any.
	// Default: GET, HEAD, POST.
	AllowMethods []string `json:"allow_methods,omitempty"`

	// AllowHeaders are the request header names a preflight may ask for,
	// or "*" for any. Accept, Accept-Language, Content-Language and
	// Content-Type are always allowed. Default: none beyond those.
	AllowHeaders []string `json:"allow_headers,omitempty"`

	// ExposeHeaders are the response header names scripts may read beyond
	// the safelisted ones, or "*" (not with AllowCredentials). Default:
	// none.
	ExposeHeaders []string `json:"expose_headers,omitempty"`

	// AllowCredentials lets requests carry cookies and Authorization and
	// scripts read their responses. Default: off.
	AllowCredentials bool `json:"allow_credentials,omitempty"`

	// AllowPrivateNetwork answers a preflight that asks
	// Access-Control-Request-Private-Network: true with
	// Access-Control-Allow-Private-Network: true. Default: off, and such a
	// preflight is refused.
	AllowPrivateNetwork bool `json:"allow_private_network,omitempty"`

	// MaxAge is how long browsers may keep a preflight's answer, sent in
	// whole seconds, at most 2h (Chromium's cap). Default: no
	// Access-Control-Max-Age, which browsers read as 5s.
	MaxAge caddy.Duration `json:"max_age,omitempty"`

	policy *cors.Policy
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (CORS) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.cors",
		New: func() caddy.Module { return new(CORS) },
	}
}

// Provision compiles the configuration.
func (h *CORS) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	p, err := cors.Compile(h.config())
	if err != nil {
		return err
	}
	h.policy = p
	return nil
}

// Validate checks the configuration. The Caddyfile parser calls it too,
// so that a bad value in JSON and in a Caddyfile gets the same message.
func (h *CORS) Validate() error {
	for _, o := range h.AllowOrigins {
		if err := checkTemplate(o); err != nil {
			return fmt.Errorf("cors: allow_origins: %q: %v", o, err)
		}
	}
	_, err := cors.Compile(h.config())
	return err
}

func (h *CORS) config() cors.Config {
	return cors.Config{
		AllowOrigins:        h.AllowOrigins,
		AllowOriginRegex:    h.AllowOriginRegex,
		AllowMethods:        h.AllowMethods,
		AllowHeaders:        h.AllowHeaders,
		ExposeHeaders:       h.ExposeHeaders,
		AllowCredentials:    h.AllowCredentials,
		AllowPrivateNetwork: h.AllowPrivateNetwork,
		MaxAge:              time.Duration(h.MaxAge),
	}
}

// ServeHTTP answers a preflight, or passes an actual request on and sets
// the CORS fields when its response's header goes out.
func (h *CORS) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	// Under a bare "*" a request without Origin gets the fields too: its
	// response, cached by a browser or a CDN that Vary does not warn,
	// may answer a cross-origin request later (Fetch standard, "CORS
	// protocol and HTTP caches").
	allowed := !h.policy.VariesByOrigin()
	origin := r.Header[cors.Origin]
	if len(origin) > 0 {
		allowed = len(origin) == 1 && h.allows(r, origin[0])
		origin = origin[:1:1] // shared with the request; appends copy
		if cors.IsPreflight(r) {
			h.preflight(w, r, origin, allowed)
			return nil
		}
	}
	cw := corsWriterPool.Get().(*corsWriter)
	*cw = corsWriter{ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, policy: h.policy, origin: origin, allowed: allowed}
	err := next.ServeHTTP(cw, r)
	// Nothing written yet: an error that Caddy's error handling will
	// answer, or an empty response that net/http will end.
	cw.settle()
	*cw = corsWriter{}
	corsWriterPool.Put(cw)
	return err
}

// allows reports whether the policy allows the request's origin, expanding
// the origins that hold placeholders only when the others do not allow it.
func (h *CORS) allows(r *http.Request, origin string) bool {
	if h.policy.AllowsOrigin(origin) {
		return true
	}
	templates := h.policy.Templates()
	if len(templates) == 0 {
		return false
	}
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		return false
	}
	for _, t := range templates {
		if repl.ReplaceAll(t, "") == origin {
			return true
		}
	}
	return false
}

// preflight answers a preflight with 204: with the CORS fields when it is
// allowed, without them otherwise, so that the browser fails it. It never
// passes it on, so that authentication and rate limits never see one.
func (h *CORS) preflight(w http.ResponseWriter, r *http.Request, origin []string, allowed bool) {
	hdr := w.Header()
	refusal := cors.RefuseOrigin
	if allowed {
		refusal = h.policy.CheckPreflight(r.Header)
	}
	if refusal == "" {
		h.policy.SetPreflight(hdr, r.Header, origin)
	} else if ce := h.logger.Check(zapcore.DebugLevel, "CORS preflight refused"); ce != nil {
		ce.Write(zap.String("reason", string(refusal)),
			zap.String("origin", origin[0]),
			zap.Strings("method", r.Header[cors.RequestMethod]),
			zap.Strings("headers", r.Header[cors.RequestHeaders]))
	}
	h.policy.SetPreflightVary(hdr)
	w.WriteHeader(http.StatusNoContent)
}

// corsWriter sets an actual response's CORS fields when its header is
// written, after the inner handlers: so that an upstream's own do not
// appear beside the handler's, and so that a cache inside sees neither
// them nor their Vary: Origin, stores one response for every origin, and
// each hit gets the fields of its own request. It is pooled: the handler
// forgets it once the next handler returns.
type corsWriter struct {
	caddyhttp.ResponseWriterWrapper
	policy  *cors.Policy
	origin  []string
	allowed bool
	settled bool
}

var corsWriterPool = sync.Pool{New: func() any { return new(corsWriter) }}

func (cw *corsWriter) settle() {
	if !cw.settled {
		cw.settled = true
		cw.policy.SetActual(cw.Header(), cw.origin, cw.allowed)
	}
}

// WriteHeader sets the fields before a final status; an informational one
// goes as it is.
func (cw *corsWriter) WriteHeader(status int) {
	if status >= 200 {
		cw.settle()
	}
	cw.ResponseWriter.WriteHeader(status)
}

func (cw *corsWriter) Write(b []byte) (int, error) {
	cw.settle()
	return cw.ResponseWriter.Write(b)
}

// ReadFrom sets the fields before the wrapped writer copies the body.
func (cw *corsWriter) ReadFrom(r io.Reader) (int64, error) {
	cw.settle()
	return cw.ResponseWriterWrapper.ReadFrom(r)
}

// FlushError sets the fields before a flush sends the header.
func (cw *corsWriter) FlushError() error {
	cw.settle()
	return http.NewResponseController(cw.ResponseWriter).Flush()
}

// Interface guards
var (
	_ caddy.Provisioner           = (*CORS)(nil)
	_ caddy.Validator             = (*CORS)(nil)
	_ caddyhttp.MiddlewareHandler = (*CORS)(nil)
	_ http.ResponseWriter         = (*corsWriter)(nil)
	_ io.ReaderFrom               = (*corsWriter)(nil)
)
