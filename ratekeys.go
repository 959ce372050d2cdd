package gateway

import (
	"fmt"
	"hash/maphash"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

var keySeed = maphash.MakeSeed()

// hashKey turns a key into the table's 64-bit key.
func hashKey(key string) uint64 { return maphash.String(keySeed, key) }

// maskKey limits a whole network together: an IP key becomes its prefix.
func (ref *zoneRef) maskKey(key string) string {
	if ref.cfg.IPv4Prefix == 0 && ref.cfg.IPv6Prefix == 0 {
		return key
	}
	addr, err := netip.ParseAddr(key)
	if err != nil {
		return key
	}
	bits := ref.cfg.IPv6Prefix
	if addr.Is4() || addr.Is4In6() {
		addr, bits = addr.Unmap(), ref.cfg.IPv4Prefix
	}
	if bits == 0 {
		return key
	}
	p, err := addr.Prefix(bits)
	if err != nil {
		return key
	}
	return p.String()
}

// keyOf expands the zone's key template for the request. A key that is one
// placeholder, the usual case, is looked up without parsing the template,
// and the commonest ones without the replacer's long switch.
func (ref *zoneRef) keyOf(r *http.Request, repl *caddy.Replacer) string {
	switch {
	case ref.keyVar == "":
		return repl.ReplaceAll(ref.cfg.Key, "")
	case strings.HasPrefix(ref.keyVar, "http.vars."):
		return caddy.ToString(caddyhttp.GetVar(r.Context(), ref.keyVar[len("http.vars."):]))
	case strings.HasPrefix(ref.keyVar, "http.request.header."):
		// As the replacer does: every field line, joined by commas.
		vals := r.Header.Values(ref.keyVar[len("http.request.header."):])
		if len(vals) == 1 {
			return vals[0]
		}
		return strings.Join(vals, ",")
	}
	v, _ := repl.Get(ref.keyVar)
	return caddy.ToString(v)
}

// singlePlaceholder returns the name of the placeholder that t consists
// of, such as "http.vars.client_ip" for "{http.vars.client_ip}", or "".
func singlePlaceholder(t string) string {
	if len(t) < 3 || t[0] != '{' || t[len(t)-1] != '}' || strings.ContainsAny(t[1:len(t)-1], "{}\\:") {
		return ""
	}
	return t[1 : len(t)-1]
}

// costOf returns the units the request costs in the zone. A template that
// expands to nothing, such as a header the request lacks, costs the
// default, 1; one that expands to 0 costs nothing. Any other value that is
// not a non-negative integer is an error of the request's.
func (ref *zoneRef) costOf(repl *caddy.Replacer) (int64, error) {
	if ref.cfg.Cost == "" || !strings.Contains(ref.cfg.Cost, "{") {
		return ref.cost, nil
	}
	v := strings.TrimSpace(repl.ReplaceAll(ref.cfg.Cost, ""))
	if v == "" {
		return 1, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("zone %s: cost %q is not a non-negative integer", ref.name, v)
	}
	return n, nil
}

func (h *RateLimit) loggedKey(key string) string {
	if h.LogKey {
		return key
	}
	return strconv.FormatUint(hashKey(key), 16)
}
