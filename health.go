package gateway

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-gateway/gateway/internal/health"
)

func init() {
	caddy.RegisterModule(Health{})
}

// DefaultCacheChecks is how long the result of a check is reused when
// cache_checks is not set.
const DefaultCacheChecks = time.Second

// Health answers an orchestrator's probes, and whoever wants to know how
// the gateway is doing:
//
//   - "live" answers 200 {"status":"alive"} while the process serves;
//   - "ready" answers 200 {"status":"ready"}, or 503 with
//     {"status":"draining"} during the HTTP app's shutdown_delay, or with
//     {"status":"unavailable"} and the reasons while a zone in fail_mode
//     closed has lost its Redis;
//   - the full report (no mode) is JSON on every named cache, every Redis
//     the config uses and every rate-limit zone, with 200 while the status
//     is ok or degraded and 503 when it is fail.
//
// Answers are JSON with Cache-Control: no-store. GET and HEAD are
// answered; other methods get 405. Checks are shared by every health
// handler of the process and reused for cache_checks, and concurrent
// probes wait for one check in flight; a check waits for each Redis no
// longer than the timeout its config gave it. No option takes
// placeholders.
type Health struct {
	// Mode is "live", "ready" or empty, for the full report. Default:
	// the full report.
	Mode string `json:"mode,omitempty"`

	// CacheChecks is how long the result of a check answers probes
	// before the next probe checks again. Default 1s.
	CacheChecks caddy.Duration `json:"cache_checks,omitempty"`

	now func() time.Time
}

// CaddyModule returns the Caddy module information.
func (Health) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.health",
		New: func() caddy.Module { return new(Health) },
	}
}

// Provision sets the defaults.
func (h *Health) Provision(ctx caddy.Context) error {
	if h.now == nil {
		h.now = time.Now
	}
	h.CacheChecks = cmp.Or(h.CacheChecks, caddy.Duration(DefaultCacheChecks))
	return nil
}

// Validate checks the mode and the cache duration.
func (h *Health) Validate() error {
	switch {
	case h.Mode != "" && h.Mode != "live" && h.Mode != "ready":
		return fmt.Errorf("health: mode must be live, ready or empty (the full report), not %q", h.Mode)
	case h.CacheChecks < 0:
		return fmt.Errorf("health: cache_checks must be a positive duration, not %v", time.Duration(h.CacheChecks))
	}
	return nil
}

// ServeHTTP answers the probe; it never calls next.
func (h *Health) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return caddyhttp.Error(http.StatusMethodNotAllowed, fmt.Errorf("health: method %s not allowed", r.Method))
	}
	if h.Mode == "live" {
		return writeBody(w, r, http.StatusOK, answerAlive)
	}
	draining := isDraining(r)
	if h.Mode == "ready" && draining {
		return writeBody(w, r, http.StatusServiceUnavailable, answerDraining)
	}
	if h.Mode == "ready" {
		rep, err := readyChecks.Get(r.Context(), h.now(), time.Duration(h.CacheChecks), runReadyChecks)
		if err != nil {
			return caddyhttp.Error(499, err) // the client left while the check ran
		}
		if len(rep.unready) > 0 {
			return writeProbe(w, r, http.StatusServiceUnavailable, probeAnswer{Status: "unavailable", Reasons: rep.unready})
		}
		return writeBody(w, r, http.StatusOK, answerReady)
	}
	rep, err := healthChecks.Get(r.Context(), h.now(), time.Duration(h.CacheChecks), runChecks)
	if err != nil {
		return caddyhttp.Error(499, err)
	}
	full := fullReport{
		Status:        rep.status,
		Draining:      draining,
		Version:       versions,
		UptimeSeconds: int64(h.now().Sub(processStart) / time.Second),
		CheckedAt:     rep.at,
		Checks:        rep.checks,
	}
	status := http.StatusOK
	if rep.status == health.Fail {
		status = http.StatusServiceUnavailable
	}
	return writeProbe(w, r, status, full)
}

// isDraining tells whether the server that took the request is in its
// shutdown_delay: Caddy sets {http.shutting_down} then, on servers whose
// listeners will close.
func isDraining(r *http.Request) bool {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		return false
	}
	v, _ := repl.Get("http.shutting_down")
	down, _ := v.(bool)
	return down
}

// probeAnswer is the answer of live and ready.
type probeAnswer struct {
	Status  string   `json:"status"`
	Reasons []string `json:"reasons,omitempty"`
}

// fullReport is the answer of the full report.
type fullReport struct {
	Status        health.Status `json:"status"`
	Draining      bool          `json:"draining"`
	Version       versionInfo   `json:"version"`
	UptimeSeconds int64         `json:"uptime_seconds"`
	CheckedAt     time.Time     `json:"checked_at"`
	Checks        checks        `json:"checks"`
}

// The answers that never change, encoded once.
var (
	answerAlive    = []byte(`{"status":"alive"}` + "\n")
	answerReady    = []byte(`{"status":"ready"}` + "\n")
	answerDraining = []byte(`{"status":"draining"}` + "\n")
)

func writeProbe(w http.ResponseWriter, r *http.Request, status int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	return writeBody(w, r, status, append(body, '\n'))
}

// writeBody sends a JSON answer, or only its header to a HEAD.
func writeBody(w http.ResponseWriter, r *http.Request, status int, body []byte) error {
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return nil
	}
	_, err := w.Write(body)
	return err
}

// processStart is about when the process started: when this package was
// initialized.
var processStart = time.Now()

// versionInfo names the builds of the gateway's modules and of Caddy.
type versionInfo struct {
	Gateway string `json:"gateway"`
	Caddy   string `json:"caddy"`
}

var versions = readVersions()

// gatewayModule is the module path of this repository.
const gatewayModule = "github.com/caddy-gateway/gateway"

func readVersions() versionInfo {
	simple, _ := caddy.Version()
	v := versionInfo{Gateway: "unknown", Caddy: simple}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if bi.Main.Path == gatewayModule {
		v.Gateway = bi.Main.Version // "(devel)" when built from the repository
		return v
	}
	for _, dep := range bi.Deps {
		if dep.Path == gatewayModule {
			if dep.Replace != nil {
				dep = dep.Replace
			}
			v.Gateway = dep.Version
		}
	}
	return v
}

// healthChecks is the last full check of the process, shared by every
// health handler of every config: what it checks (the pools of caches,
// zones and Redis clients) is process-wide too. readyChecks is the last
// check of what ready answers by, alone: the Redis of the zones in
// fail_mode closed. A ready probe must not wait for the bus's Redis, whose
// timeout (2s) is longer than an orchestrator waits for a probe, for a
// check that cannot make the node unready.
var healthChecks, readyChecks health.Cache[checkReport]

// checkReport is the result of one check.
type checkReport struct {
	at      time.Time
	status  health.Status
	unready []string // why ready answers 503
	checks  checks
}

// checks is the "checks" member of the full report.
type checks struct {
	Caches []cacheCheck `json:"caches"`
	Redis  []redisCheck `json:"redis"`
	Zones  []zoneCheck  `json:"zones"`
	Bus    []busCheck   `json:"bus"`
}

type cacheCheck struct {
	Name      string        `json:"name"`
	Status    health.Status `json:"status"`
	Entries   int           `json:"entries"`
	SizeBytes int64         `json:"size_bytes"`
	MaxSize   int64         `json:"max_size"`
}

type redisCheck struct {
	URL       string   `json:"url"` // without credentials
	UsedBy    []string `json:"used_by"`
	TimeoutMS float64  `json:"timeout_ms"`
	Status    string   `json:"status"` // "ok" or "error"
	LatencyMS float64  `json:"latency_ms"`
	Error     string   `json:"error,omitempty"`

	client *redisClient
}

type zoneCheck struct {
	Name     string        `json:"name"`
	Status   health.Status `json:"status"`
	Store    string        `json:"store"` // "memory" or "redis"
	Redis    string        `json:"redis,omitempty"`
	FailMode string        `json:"fail_mode,omitempty"`
	Fallback bool          `json:"fallback"` // deciding by fail_mode, not in Redis
	Error    string        `json:"error,omitempty"`
}

type busCheck struct {
	Redis  string        `json:"redis"`
	Status health.Status `json:"status"`
	Error  string        `json:"error,omitempty"`
}

// runChecks looks at every named cache, pings every Redis in use, once
// each and all at once, and judges the zones and the invalidation bus by what
// the pings found.
func runChecks() checkReport { return check(true) }

// runReadyChecks pings the Redis of the zones in fail_mode closed only,
// and judges those zones.
func runReadyChecks() checkReport { return check(false) }

func check(full bool) checkReport {
	rep := checkReport{at: time.Now(), checks: checks{
		Caches: []cacheCheck{}, Redis: []redisCheck{}, Zones: []zoneCheck{}, Bus: []busCheck{},
	}}
	if full {
		rangeCaches(func(c *namedCache) {
			st := c.Stats()
			rep.checks.Caches = append(rep.checks.Caches, cacheCheck{
				Name: c.Name(), Status: health.OK, Entries: st.Entries, SizeBytes: st.UsedBytes, MaxSize: st.MaxSize,
			})
		})
	}

	pings := map[*redisClient]*redisCheck{}
	var order []*redisCheck // as the zones, then the buses, meet them
	use := func(c *redisClient, user string) *redisCheck {
		p := pings[c]
		if p == nil {
			p = &redisCheck{URL: c.display, TimeoutMS: ms(c.timeout), client: c}
			pings[c] = p
			order = append(order, p)
		}
		p.UsedBy = append(p.UsedBy, user)
		return p
	}
	type zoneUse struct {
		z *zoneEntry
		p *redisCheck
	}
	var zones []zoneUse
	rangeZones(func(z *zoneEntry) {
		if fb := z.fallback.Load(); !full && (fb == nil || fb.failMode != "closed") {
			return
		}
		var p *redisCheck
		if c := z.redis.Load(); c != nil {
			p = use(c, "zone "+z.Name)
		}
		zones = append(zones, zoneUse{z, p})
	})
	type busUse struct {
		b *bus
		p *redisCheck
	}
	var bs []busUse
	if full {
		rangePool(buses, func(b *bus) { bs = append(bs, busUse{b, use(b.client, "invalidation_bus")}) })
	}

	var wg sync.WaitGroup
	for _, p := range order {
		wg.Go(p.ping)
	}
	wg.Wait()
	for _, p := range order {
		c := *p
		c.client = nil // the kept report holds no client past its release
		rep.checks.Redis = append(rep.checks.Redis, c)
	}

	now := time.Now()
	for _, zu := range zones {
		zc := judgeZone(zu.z, zu.p, now)
		if zc.Status == health.Fail {
			rep.unready = append(rep.unready, fmt.Sprintf("zone %s: fail_mode closed and its Redis fails: %s", zc.Name, zc.Error))
		}
		rep.status = health.Worst(rep.status, zc.Status)
		rep.checks.Zones = append(rep.checks.Zones, zc)
	}
	for _, bu := range bs {
		bc := busCheck{Redis: bu.p.URL, Status: health.OK, Error: bu.p.Error}
		if bc.Error == "" && !bu.b.subscribed.Load() {
			// Redis answers, but the bus hears nothing: Redis refused the
			// subscription, or it is being made.
			bc.Error = "not subscribed"
			if err := bu.b.lastErr.Load(); err != nil {
				bc.Error += ": " + *err
			}
		}
		if bc.Error != "" {
			bc.Status = health.Degraded // invalidations stay on this node
		}
		rep.status = health.Worst(rep.status, bc.Status)
		rep.checks.Bus = append(rep.checks.Bus, bc)
	}
	return rep
}

// judgeZone says how a zone serves: from memory, from Redis, or from its
// fallback while Redis fails (by the ping, or by the zone's own breaker,
// which requests opened). Without its store, a closed zone fails and
// the others are degraded.
func judgeZone(z *zoneEntry, p *redisCheck, now time.Time) zoneCheck {
	zc := zoneCheck{Name: z.Name, Status: health.OK, Store: "memory"}
	if p == nil {
		return zc
	}
	zc.Store, zc.Redis, zc.FailMode = "redis", p.URL, "local"
	fb := z.fallback.Load()
	if fb != nil {
		zc.FailMode = fb.failMode
	}
	breakerOpen := fb != nil && fb.breaker != nil && !fb.breaker.allow(now)
	switch {
	case p.Error != "":
		zc.Error = p.Error
	case breakerOpen:
		zc.Error = "requests found Redis failing in the last " + breakerPause.String()
	default:
		return zc
	}
	zc.Fallback = true
	zc.Status = health.Degraded
	if zc.FailMode == "closed" {
		zc.Status = health.Fail
	}
	return zc
}

// ping asks the Redis for PONG, waiting no longer than the client's
// timeout.
func (p *redisCheck) ping() {
	timeout := p.client.timeout
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	err := p.client.ping(ctx)
	p.LatencyMS = ms(time.Since(start))
	p.Status = "ok"
	if err == nil {
		return
	}
	p.Status = "error"
	switch dialErr := p.client.lastDialError(start); {
	case dialErr != nil:
		p.Error = fmt.Sprintf("cannot connect: %v", dialErr)
	case ctx.Err() != nil || isTimeout(err):
		p.Error = fmt.Sprintf("no answer within the timeout of %v: %v", timeout, err)
	default:
		p.Error = err.Error()
	}
}

// isTimeout tells a read that hit its deadline, which can come a moment
// before the context's own.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ms is a duration in milliseconds, for JSON.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Interface guards
var (
	_ caddy.Provisioner           = (*Health)(nil)
	_ caddy.Validator             = (*Health)(nil)
	_ caddyhttp.MiddlewareHandler = (*Health)(nil)
)
