package gateway

import (
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/caddy-gateway/gateway/internal/cachestore"
	"github.com/caddy-gateway/gateway/internal/cors"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("cache_pool", parseCachePool)
	httpcaddyfile.RegisterHandlerDirective("cache_write", parseHandler[CacheWrite])
	httpcaddyfile.RegisterHandlerDirective("cache_read", parseHandler[CacheRead])
	httpcaddyfile.RegisterHandlerDirective("cache_invalidate", parseHandler[CacheInvalidate])
	httpcaddyfile.RegisterHandlerDirective("rate_limit", parseHandler[RateLimit])
	httpcaddyfile.RegisterHandlerDirective("cors", parseHandler[CORS])

	// Rate limits count every request, cache hits included, before
	// authentication spends any work on it.
	httpcaddyfile.RegisterDirectiveOrder("rate_limit", httpcaddyfile.Before, "basic_auth")

	// CORS answers preflights before rate limits and authentication (the
	// deprecated basicauth included) could refuse them.
	httpcaddyfile.RegisterDirectiveOrder("cors", httpcaddyfile.Before, "basicauth")

	// Caching runs after authentication and encoding: encode, then
	// cache_invalidate, cache_read, cache_write. Each registration after
	// encode lands right behind it, so they are made in reverse.
	httpcaddyfile.RegisterDirectiveOrder("cache_write", httpcaddyfile.After, "encode")
	httpcaddyfile.RegisterDirectiveOrder("cache_read", httpcaddyfile.After, "encode")
	httpcaddyfile.RegisterDirectiveOrder("cache_invalidate", httpcaddyfile.After, "encode")

	// Probes are answered before rate limits and authentication (right
	// after try_files), so a limit never refuses an orchestrator.
	httpcaddyfile.RegisterHandlerDirective("health", parseHandler[Health])
	httpcaddyfile.RegisterDirectiveOrder("health", httpcaddyfile.After, "try_files")
}

// unmarshalerHandler is a handler that reads its own Caddyfile tokens.
type unmarshalerHandler[T any] interface {
	*T
	caddyfile.Unmarshaler
	caddyhttp.MiddlewareHandler
}

func parseHandler[T any, PT unmarshalerHandler[T]](h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := PT(new(T))
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return handler, err
}

// parseCachePool sets up the cache_pool app from its global option:
//
//	cache_pool {
//		max_size       <size>
//		max_entry_size <size>
//		cache <name> {
//			max_size       <size>
//			max_entry_size <size>
//		}
//		redis <url>
//	}
func parseCachePool(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("cache_pool: the global option is given twice")
	}
	pool := new(Pool)
	d.Next() // consume the option name
	if d.NextArg() {
		return nil, d.Errf("cache_pool: unexpected argument '%s'; settings go in a block", d.Val())
	}
	once := onceEach{}
	for d.NextBlock(0) {
		opt := d.Val()
		if opt != "cache" {
			if err := once.check(d, "cache_pool"); err != nil {
				return nil, err
			}
		}
		switch opt {
		case "max_size":
			if err := parseSizeArg(d, "cache_pool", &pool.MaxSize); err != nil {
				return nil, err
			}
		case "max_entry_size":
			if err := parseSizeArg(d, "cache_pool", &pool.MaxEntrySize); err != nil {
				return nil, err
			}
		case "redis":
			if !oneArg(d, &pool.Redis) {
				return nil, d.Err("cache_pool: redis takes one URL")
			}
		case "cache":
			if !d.NextArg() {
				return nil, d.Err("cache_pool: cache needs a name")
			}
			name := d.Val()
			if err := cachestore.CheckName(name); err != nil {
				return nil, d.Errf("cache_pool: cache %q: %v", name, err)
			}
			if d.NextArg() {
				return nil, d.Errf("cache_pool: cache %s: unexpected argument '%s'", name, d.Val())
			}
			if pool.Caches[name] != nil {
				return nil, d.Errf("cache_pool: cache %s is declared twice", name)
			}
			settings, err := parseCacheSettings(d, name)
			if err != nil {
				return nil, err
			}
			if pool.Caches == nil {
				pool.Caches = make(map[string]*CacheSettings)
			}
			pool.Caches[name] = settings
		default:
			return nil, d.Errf("cache_pool: unknown subdirective '%s'", opt)
		}
	}
	if err := pool.Validate(); err != nil {
		return nil, d.Err(err.Error())
	}
	return httpcaddyfile.App{Name: "cache_pool", Value: caddyconfig.JSON(pool, nil)}, nil
}

func parseCacheSettings(d *caddyfile.Dispenser, name string) (*CacheSettings, error) {
	s := new(CacheSettings)
	dir := "cache_pool: cache " + name
	once := onceEach{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if err := once.check(d, dir); err != nil {
			return nil, err
		}
		switch opt {
		case "max_size":
			if err := parseSizeArg(d, dir, &s.MaxSize); err != nil {
				return nil, err
			}
		case "max_entry_size":
			if err := parseSizeArg(d, dir, &s.MaxEntrySize); err != nil {
				return nil, err
			}
		default:
			return nil, d.Errf("%s: unknown subdirective '%s'", dir, opt)
		}
	}
	return s, nil
}

// parseSizeArg reads one size argument: plain bytes or a number with a
// unit such as KiB, MiB, GiB, KB, MB or GB.
func parseSizeArg(d *caddyfile.Dispenser, dir string, dst *int64) error {
	opt := d.Val()
	var arg string
	if !oneArg(d, &arg) {
		return d.Errf("%s: %s takes exactly one size", dir, opt)
	}
	n, err := humanize.ParseBytes(arg)
	if err != nil || n == 0 || n > 1<<50 {
		return d.Errf("%s: %s: invalid size '%s'", dir, opt, arg)
	}
	*dst = int64(n)
	return nil
}

func oneArg(d *caddyfile.Dispenser, dst *string) bool {
	if !d.NextArg() {
		return false
	}
	*dst = d.Val()
	return !d.NextArg()
}

// parseDurationArg reads one positive duration argument, for an option
// whose zero would mean "unset".
func parseDurationArg(d *caddyfile.Dispenser, dir string, dst *caddy.Duration) error {
	opt := d.Val()
	if err := parseAnyDurationArg(d, dir, dst); err != nil {
		return err
	}
	if *dst <= 0 {
		return d.Errf("%s: %s must be positive, not %v", dir, opt, time.Duration(*dst))
	}
	return nil
}

// parseAnyDurationArg reads one duration argument; the handler's Validate
// judges its value.
func parseAnyDurationArg(d *caddyfile.Dispenser, dir string, dst *caddy.Duration) error {
	opt := d.Val()
	var arg string
	if !oneArg(d, &arg) {
		return d.Errf("%s: %s takes exactly one duration", dir, opt)
	}
	dur, err := caddy.ParseDuration(arg)
	if err != nil {
		return d.Errf("%s: %s: invalid duration '%s'", dir, opt, arg)
	}
	*dst = caddy.Duration(dur)
	return nil
}

// parseFlag sets a flag option, which takes no argument.
func parseFlag(d *caddyfile.Dispenser, dir, opt string, flag *bool) error {
	if d.NextArg() {
		return d.Errf("%s: %s takes no argument", dir, opt)
	}
	*flag = true
	return nil
}

// parseListArg reads one or more arguments.
func parseListArg(d *caddyfile.Dispenser, dir string) ([]string, error) {
	opt := d.Val()
	args := d.RemainingArgs()
	if len(args) == 0 {
		return nil, d.Errf("%s: %s needs at least one value", dir, opt)
	}
	return args, nil
}

// cacheNameArg reads the cache name that follows a directive.
func cacheNameArg(d *caddyfile.Dispenser, dir string) (string, error) {
	if !d.NextArg() {
		return "", d.Errf("%s: missing cache name", dir)
	}
	name := d.Val()
	if err := cachestore.CheckName(name); err != nil {
		return "", d.Errf("%s: cache %q: %v", dir, name, err)
	}
	if d.NextArg() {
		return "", d.Errf("%s: unexpected argument '%s' after the cache name", dir, d.Val())
	}
	return name, nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	cache_write [<matcher>] <name> {
//		ttl              <duration>
//		key_query        <param...>
//		key_headers      <header...>
//		key_placeholders <placeholder...>
//		status           <code...>
//		max_entry_size   <size>
//		max_ttl          <duration>
//		tags_from        <header...>
//		etag
//		heuristic        <duration>
//		stale_while_revalidate <duration>
//		stale_if_error   <duration>
//		targeted_cache_control <header...> | off
//	}
func (h *CacheWrite) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	const dir = "cache_write"
	d.Next() // consume the directive name
	name, err := cacheNameArg(d, dir)
	if err != nil {
		return err
	}
	h.Cache = name
	once := onceEach{}
	for d.NextBlock(0) {
		opt := d.Val()
		if err := once.check(d, dir); err != nil {
			return err
		}
		switch opt {
		case "ttl":
			err = parseDurationArg(d, dir, &h.TTL)
		case "max_ttl":
			err = parseDurationArg(d, dir, &h.MaxTTL)
		case "max_entry_size":
			err = parseSizeArg(d, dir, &h.MaxEntrySize)
		case "key_query":
			h.KeyQuery, err = parseListArg(d, dir)
		case "key_headers":
			h.KeyHeaders, err = parseListArg(d, dir)
		case "key_placeholders":
			h.KeyPlaceholders, err = parseListArg(d, dir)
		case "key_cookies":
			h.KeyCookies, err = parseListArg(d, dir)
		case "ignore_cookies":
			h.IgnoreCookies, err = parseListArg(d, dir)
		case "tags_from":
			h.TagsFrom, err = parseListArg(d, dir)
		case "status":
			h.Status, err = parseStatuses(d, dir)
		case "etag":
			err = parseFlag(d, dir, opt, &h.ETag)
		case "heuristic":
			err = parseDurationArg(d, dir, &h.Heuristic)
		case "stale_while_revalidate":
			err = parseDurationArg(d, dir, &h.StaleWhileRevalidate)
		case "stale_if_error":
			err = parseDurationArg(d, dir, &h.StaleIfError)
		case "targeted_cache_control":
			h.TargetedCacheControl, err = parseListArg(d, dir)
		default:
			return d.Errf("%s: unknown subdirective '%s'", dir, opt)
		}
		if err != nil {
			return err
		}
		if err := h.Validate(); err != nil {
			return d.Err(err.Error())
		}
	}
	return nil
}

func parseStatuses(d *caddyfile.Dispenser, dir string) ([]int, error) {
	args, err := parseListArg(d, dir)
	if err != nil {
		return nil, err
	}
	codes := make([]int, 0, len(args))
	for _, a := range args {
		code, err := strconv.Atoi(a)
		if err != nil {
			return nil, d.Errf("%s: status: '%s' is not a status code", dir, a)
		}
		codes = append(codes, code)
	}
	return codes, nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	cache_read [<matcher>] <name>
func (h *CacheRead) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	const dir = "cache_read"
	d.Next() // consume the directive name
	name, err := cacheNameArg(d, dir)
	if err != nil {
		return err
	}
	h.Cache = name
	if d.NextBlock(0) {
		return d.Errf("%s: unknown subdirective '%s'; cache_read takes no options", dir, d.Val())
	}
	if err := h.Validate(); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	cache_invalidate [<matcher>] <name> {
//		urls     <url...>
//		prefixes <path...>
//		tags     <tag...>
//		methods  <method...>
//	}
func (h *CacheInvalidate) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	const dir = "cache_invalidate"
	d.Next() // consume the directive name
	name, err := cacheNameArg(d, dir)
	if err != nil {
		return err
	}
	h.Cache = name
	once := onceEach{}
	for d.NextBlock(0) {
		opt := d.Val()
		if err := once.check(d, dir); err != nil {
			return err
		}
		switch opt {
		case "urls":
			h.URLs, err = parseListArg(d, dir)
		case "prefixes":
			h.Prefixes, err = parseListArg(d, dir)
		case "tags":
			h.Tags, err = parseListArg(d, dir)
		case "methods":
			h.Methods, err = parseListArg(d, dir)
			for i, m := range h.Methods {
				h.Methods[i] = strings.ToUpper(m)
			}
		default:
			return d.Errf("%s: unknown subdirective '%s'", dir, opt)
		}
		if err != nil {
			return err
		}
		if err := h.Validate(); err != nil {
			return d.Err(err.Error())
		}
	}
	return nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. It reads
// the syntax of mholt/caddy-ratelimit too:
//
//	rate_limit [<matcher>] {
//		zone <name> {
//			match {
//				<matchers...>
//			}
//			key         <template>
//			events      <n>
//			window      <duration>
//			algorithm   fixed_window|sliding_window|token_bucket|leaky_bucket
//			burst       <n>
//			cost        <n|placeholder>
//			dry_run
//			ipv4_prefix <bits>
//			ipv6_prefix <bits>
//		}
//		headers        ietf|legacy|both|off
//		max_keys       <n>
//		jitter         <fraction>
//		log_key
//		sweep_interval <duration>
//		disable_metrics
//		ipv4_prefix    <bits>
//		ipv6_prefix    <bits>
//		redis          <url>
//		fail_mode      local|open|closed
//		timeout        <duration>
//	}
func (h *RateLimit) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	const dir = "rate_limit"
	d.Next() // consume the directive name
	if d.NextArg() {
		return d.Errf("%s: unexpected argument '%s'; zones go in a block", dir, d.Val())
	}
	once := onceEach{}
	var v4, v6 *int
	for d.NextBlock(0) {
		opt := d.Val()
		if opt != "zone" {
			if err := once.check(d, dir); err != nil {
				return err
			}
		}
		var err error
		switch opt {
		case "zone":
			err = h.parseZone(d)
		case "headers":
			if !oneArg(d, &h.Headers) {
				return d.Errf("%s: headers takes one of ietf, legacy, both, off", dir)
			}
		case "max_keys":
			err = parseIntField(d, dir, &h.MaxKeys)
		case "jitter":
			var arg string
			if !oneArg(d, &arg) {
				return d.Errf("%s: jitter takes one number", dir)
			}
			f, perr := strconv.ParseFloat(arg, 64)
			if perr != nil {
				return d.Errf("%s: jitter: '%s' is not a number", dir, arg)
			}
			// ParseFloat reads "nan" and "inf" too: validateOptions,
			// below, refuses them at this line.
			h.Jitter = f
		case "log_key":
			err = parseFlag(d, dir, opt, &h.LogKey)
		case "disable_metrics":
			err = parseFlag(d, dir, opt, &h.DisableMetrics)
		case "sweep_interval":
			err = parseDurationArg(d, dir, &h.SweepInterval)
		case "ipv4_prefix":
			v4 = new(int)
			err = parsePrefixArg(d, dir, 32, v4)
		case "ipv6_prefix":
			v6 = new(int)
			err = parsePrefixArg(d, dir, 128, v6)
		case "redis":
			if !oneArg(d, &h.Redis) {
				return d.Errf("%s: redis takes one URL", dir)
			}
		case "fail_mode":
			if !oneArg(d, &h.FailMode) {
				return d.Errf("%s: fail_mode takes one of local, open, closed", dir)
			}
		case "timeout":
			err = parseDurationArg(d, dir, &h.Timeout)
		case "distributed", "storage":
			return d.Errf("%s: '%s' is not supported: this rate_limit shares state across nodes through Redis instead (the 'redis' option)", dir, opt)
		default:
			return d.Errf("%s: unknown subdirective '%s'", dir, opt)
		}
		if err != nil {
			return err
		}
		if err := h.validateOptions(); err != nil {
			return d.Err(err.Error())
		}
	}
	// Prefixes given for the handler apply to the zones that set none.
	for _, z := range h.RateLimits {
		if v4 != nil && z.IPv4Prefix == 0 {
			z.IPv4Prefix = *v4
		}
		if v6 != nil && z.IPv6Prefix == 0 {
			z.IPv6Prefix = *v6
		}
	}
	if err := h.Validate(); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

func (h *RateLimit) parseZone(d *caddyfile.Dispenser) error {
	const dir = "rate_limit"
	var name string
	if !oneArg(d, &name) {
		return d.Errf("%s: zone needs exactly one name", dir)
	}
	if h.RateLimits[name] != nil {
		return d.Errf("%s: zone %s is defined twice", dir, name)
	}
	zdir := dir + ": zone " + name
	z := new(ZoneConfig)
	once := onceEach{}
	var err error
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := once.check(d, zdir); err != nil {
			return err
		}
		opt := d.Val()
		switch opt {
		case "match":
			var set caddy.ModuleMap
			if set, err = caddyhttp.ParseCaddyfileNestedMatcherSet(d); err == nil {
				z.MatcherSetsRaw = append(z.MatcherSetsRaw, set)
			}
		case "key":
			if !oneArg(d, &z.Key) {
				return d.Errf("%s: key takes one template", zdir)
			}
		case "events":
			z.MaxEvents, err = parseIntArg(d, zdir)
		case "window":
			err = parseAnyDurationArg(d, zdir, &z.Window)
		case "algorithm":
			if !oneArg(d, &z.Algorithm) {
				return d.Errf("%s: algorithm takes one name", zdir)
			}
		case "burst":
			z.Burst, err = parseIntArg(d, zdir)
		case "cost":
			if !oneArg(d, &z.Cost) {
				return d.Errf("%s: cost takes a number or a placeholder", zdir)
			}
		case "dry_run":
			err = parseFlag(d, zdir, "dry_run", &z.DryRun)
		case "ipv4_prefix":
			err = parsePrefixArg(d, zdir, 32, &z.IPv4Prefix)
		case "ipv6_prefix":
			err = parsePrefixArg(d, zdir, 128, &z.IPv6Prefix)
		default:
			return d.Errf("%s: unknown subdirective '%s'", zdir, opt)
		}
		if err != nil {
			return err
		}
	}
	if err := z.validate(name); err != nil {
		return d.Errf("%s: %v", zdir, err)
	}
	if h.RateLimits == nil {
		h.RateLimits = make(map[string]*ZoneConfig)
	}
	h.RateLimits[name] = z
	return nil
}

// parseIntArg reads one integer argument; the handler's Validate judges
// its value.
func parseIntArg(d *caddyfile.Dispenser, dir string) (int64, error) {
	opt := d.Val()
	var arg string
	if !oneArg(d, &arg) {
		return 0, d.Errf("%s: %s takes one number", dir, opt)
	}
	n, err := strconv.ParseInt(arg, 10, 64)
	if err != nil {
		return 0, d.Errf("%s: %s: '%s' is not an integer", dir, opt, arg)
	}
	return n, nil
}

// parseIntField reads one integer argument into an int; the handler's
// Validate judges its value.
func parseIntField(d *caddyfile.Dispenser, dir string, dst *int) error {
	opt := d.Val()
	n, err := parseIntArg(d, dir)
	if err != nil {
		return err
	}
	if int64(int(n)) != n {
		return d.Errf("%s: %s: %d is out of range", dir, opt, n)
	}
	*dst = int(n)
	return nil
}

// parsePrefixArg reads a prefix length, 1 to bits. Validate takes 0 for
// the option left out, as JSON has it, and limits each address alone;
// written in a Caddyfile, 0 reads as a /0, every address in one network,
// so it is refused rather than read either way.
func parsePrefixArg(d *caddyfile.Dispenser, dir string, bits int, dst *int) error {
	opt := d.Val()
	var n int
	if err := parseIntField(d, dir, &n); err != nil {
		return err
	}
	if n < 1 || n > bits {
		return d.Errf("%s: %s must be 1 to %d, not %d", dir, opt, bits, n)
	}
	*dst = n
	return nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	cors [<matcher>] {
//		allow_origins         <origin...>
//		allow_origin_regex    <regexp>
//		allow_methods         <method...>
//		allow_headers         <header...>
//		expose_headers        <header...>
//		allow_credentials
//		allow_private_network
//		max_age               <duration>
//	}
func (h *CORS) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	const dir = "cors"
	d.Next() // consume the directive name
	if d.NextArg() {
		return d.Errf("%s: unexpected argument '%s'; options go in a block", dir, d.Val())
	}
	once := onceEach{}
	for d.NextBlock(0) {
		opt := d.Val()
		if err := once.check(d, dir); err != nil {
			return err
		}
		var err error
		switch opt {
		case "allow_origins":
			h.AllowOrigins, err = parseListArg(d, dir)
		case "allow_origin_regex":
			if !oneArg(d, &h.AllowOriginRegex) {
				return d.Errf("%s: allow_origin_regex takes one regular expression", dir)
			}
		case "allow_methods":
			h.AllowMethods, err = parseListArg(d, dir)
		case "allow_headers":
			h.AllowHeaders, err = parseListArg(d, dir)
		case "expose_headers":
			h.ExposeHeaders, err = parseListArg(d, dir)
		case "allow_credentials":
			err = parseFlag(d, dir, opt, &h.AllowCredentials)
		case "allow_private_network":
			err = parseFlag(d, dir, opt, &h.AllowPrivateNetwork)
		case "max_age":
			err = parseAnyDurationArg(d, dir, &h.MaxAge)
		default:
			return d.Errf("%s: unknown subdirective '%s'", dir, opt)
		}
		if err != nil {
			return err
		}
		// Judged after each option, so the error names its line; the
		// requirement of an origin waits for the end of the block.
		if err := cors.CheckOptions(h.config()); err != nil {
			return d.Err(err.Error())
		}
	}
	if err := h.Validate(); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

// onceEach refuses an option given twice in one block.
type onceEach map[string]bool

// check records the option at d and refuses it if the block had it before.
func (o onceEach) check(d *caddyfile.Dispenser, dir string) error {
	opt := d.Val()
	if o[opt] {
		return d.Errf("%s: duplicate option '%s'", dir, opt)
	}
	o[opt] = true
	return nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	health [<matcher>] [live|ready] {
//		cache_checks <duration>
//	}
func (h *Health) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	const dir = "health"
	d.Next() // consume the directive name
	if d.NextArg() {
		h.Mode = d.Val()
		if err := h.Validate(); err != nil {
			return d.Err(err.Error())
		}
	}
	if d.NextArg() {
		return d.Errf("%s: unexpected argument '%s'; health takes one mode at most", dir, d.Val())
	}
	once := onceEach{}
	for d.NextBlock(0) {
		if err := once.check(d, dir); err != nil {
			return err
		}
		switch d.Val() {
		case "cache_checks":
			if err := parseDurationArg(d, dir, &h.CacheChecks); err != nil {
				return err
			}
		default:
			return d.Errf("%s: unknown subdirective '%s'", dir, d.Val())
		}
	}
	if err := h.Validate(); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*Health)(nil)
	_ caddyfile.Unmarshaler = (*RateLimit)(nil)
	_ caddyfile.Unmarshaler = (*CacheWrite)(nil)
	_ caddyfile.Unmarshaler = (*CacheRead)(nil)
	_ caddyfile.Unmarshaler = (*CacheInvalidate)(nil)
	_ caddyfile.Unmarshaler = (*CORS)(nil)
)
