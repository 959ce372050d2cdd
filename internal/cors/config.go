// Package cors holds the CORS protocol of the Fetch standard (section 3.2)
// as the gateway applies it, free of any Caddy type: the checking of a
// configuration, the matching of request origins, the decision on a
// preflight and the response fields of preflights and actual requests.
package cors

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// MaxMaxAge is the longest preflight lifetime sent: Chromium caps
// Access-Control-Max-Age at two hours (Firefox at 24), so a longer one
// would mean different things to different browsers.
const MaxMaxAge = 2 * time.Hour

// DefaultMethods are the methods allowed when none are configured: the
// CORS-safelisted ones.
var DefaultMethods = []string{"GET", "HEAD", "POST"}

// Config is a CORS configuration, with the option names of Starlette's
// CORSMiddleware.
type Config struct {
	// AllowOrigins are origins (scheme://host[:port]), patterns with one
	// wildcard (https://*.example.com, http://localhost:*), or "*" alone.
	// An entry that holds '{' is a template its caller expands for each
	// request; Compile leaves it to Policy.Templates.
	AllowOrigins []string

	// AllowOriginRegex, if set, allows the origins it matches whole.
	AllowOriginRegex string

	// AllowMethods are the methods a preflight may ask for, or "*" alone.
	// Default: DefaultMethods.
	AllowMethods []string

	// AllowHeaders are the request header names a preflight may ask for,
	// beyond the safelisted ones, or "*" alone.
	AllowHeaders []string

	// ExposeHeaders are the response header names scripts may read, or
	// "*" alone (not with credentials).
	ExposeHeaders []string

	AllowCredentials    bool
	AllowPrivateNetwork bool

	// MaxAge is how long a browser may keep a preflight's answer; zero
	// sends no Access-Control-Max-Age (browsers keep it 5 seconds), and
	// more than MaxMaxAge is sent as MaxMaxAge.
	MaxAge time.Duration
}

// CheckOptions reports the first fault of the options given so far, in a
// sentence that names the option, without requiring an origin yet: a
// parser calls it after each option.
func CheckOptions(c Config) error {
	_, err := compile(c)
	return err
}

// Compile checks the configuration and builds the policy it describes.
func Compile(c Config) (*Policy, error) {
	if len(c.AllowOrigins) == 0 && c.AllowOriginRegex == "" {
		return nil, errors.New("cors: allow_origins or allow_origin_regex is required")
	}
	return compile(c)
}

func compile(c Config) (*Policy, error) {
	p := &Policy{
		exact:          make(map[string]struct{}),
		credentials:    c.AllowCredentials,
		privateNetwork: c.AllowPrivateNetwork,
	}
	if err := p.compileOrigins(c); err != nil {
		return nil, err
	}
	if err := p.compileMethods(c.AllowMethods); err != nil {
		return nil, err
	}
	if err := p.compileHeaders(c); err != nil {
		return nil, err
	}
	if c.MaxAge < 0 {
		return nil, fmt.Errorf("cors: max_age must not be negative, not %v", c.MaxAge)
	}
	if c.MaxAge > 0 {
		age := min(c.MaxAge, MaxMaxAge)
		secs := (age + time.Second - 1) / time.Second // whole seconds, rounded up
		p.maxAge = strconv.Itoa(int(secs))
	}
	p.buildFields()
	return p, nil
}

func (p *Policy) compileOrigins(c Config) error {
	for _, o := range c.AllowOrigins {
		switch {
		case o == "*":
			if len(c.AllowOrigins) > 1 || c.AllowOriginRegex != "" {
				return errors.New("cors: allow_origins '*' allows every origin and must stand alone, without other origins or allow_origin_regex")
			}
			if c.AllowCredentials {
				return errors.New("cors: allow_origins '*' cannot go with allow_credentials: browsers refuse '*' on credentialed requests; list the origins instead")
			}
			p.anyOrigin = true
		case strings.Contains(o, "{"):
			p.templates = append(p.templates, o)
		default:
			if err := p.addOrigin(o); err != nil {
				return err
			}
		}
	}
	if c.AllowOriginRegex != "" {
		re, err := compileWhole(c.AllowOriginRegex)
		if err != nil {
			return err
		}
		p.regex = re
	}
	return nil
}

// compileWhole compiles an allow_origin_regex to match whole origins only.
// The regex must compile alone first: wrapped in ^(?:…)$, one with an
// unbalanced ')' would close the group early and leave an alternative
// unanchored (`a)|(b` becomes ^(?:a)|(b)$, which matches any origin that
// starts with a). Once the regex compiles alone, the wrapped form is a
// whole match: flags it sets, (?m) among them, end with the group.
func compileWhole(expr string) (*regexp.Regexp, error) {
	if _, err := regexp.Compile(expr); err != nil {
		return nil, fmt.Errorf("cors: allow_origin_regex: %v", err)
	}
	re, err := regexp.Compile("^(?:" + expr + ")$")
	if err != nil {
		// What compiles alone fails wrapped only when a \Q runs to its
		// end and takes the closing of the group for literal text.
		return nil, fmt.Errorf("cors: allow_origin_regex: '%s' cannot be anchored to match whole origins: end its \\Q with \\E", expr)
	}
	return re, nil
}

// addOrigin adds one origin or one-wildcard pattern.
func (p *Policy) addOrigin(o string) error {
	lower := strings.ToLower(o)
	if lower == "null" {
		return errors.New("cors: allow_origins: the 'null' origin is shared by every sandboxed document and local file, so allowing it allows anyone; it is refused")
	}
	scheme, host, port, err := splitOrigin(lower)
	if err != nil {
		return fmt.Errorf("cors: allow_origins: '%s' %v", o, err)
	}
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		port = "" // browsers leave a default port out of Origin, for patterns too
	}
	switch strings.Count(lower, "*") {
	case 0:
		p.exact[joinOrigin(scheme, host, port)] = struct{}{}
	case 1:
		switch {
		case port == "*" && !strings.Contains(host, "*"):
			p.patterns = append(p.patterns, pattern{prefix: scheme + "://" + host + ":", port: true})
		case strings.HasPrefix(host, "*.") && len(host) > 2:
			p.patterns = append(p.patterns, pattern{prefix: scheme + "://", suffix: host[1:] + portSuffix(port)})
		default:
			return fmt.Errorf("cors: allow_origins: '%s': a wildcard stands only for subdomains (https://*.example.com) or for the port (http://localhost:*)", o)
		}
	default:
		return fmt.Errorf("cors: allow_origins: '%s' holds more than one wildcard", o)
	}
	return nil
}

func portSuffix(port string) string {
	if port == "" {
		return ""
	}
	return ":" + port
}

func joinOrigin(scheme, host, port string) string {
	return scheme + "://" + host + portSuffix(port)
}

// splitOrigin splits a lower-case origin, possibly with a wildcard in its
// host or port, into its parts, and says what is wrong with it if it is not
// scheme://host[:port].
func splitOrigin(o string) (scheme, host, port string, err error) {
	scheme, rest, ok := strings.Cut(o, "://")
	if !ok || !isScheme(scheme) {
		return "", "", "", errors.New("is not an origin: scheme://host[:port]")
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		return "", "", "", errors.New("is not an origin: an origin has no path, query or fragment, not even a trailing '/'")
	}
	host, port = rest, ""
	if strings.HasPrefix(rest, "[") { // IPv6
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return "", "", "", errors.New("is not an origin: unclosed '[' in the host")
		}
		host, rest = rest[:end+1], rest[end+1:]
		if rest != "" {
			if rest[0] != ':' {
				return "", "", "", errors.New("is not an origin: scheme://host[:port]")
			}
			port = rest[1:]
		}
		if !validIPv6(host[1 : len(host)-1]) {
			return "", "", "", errors.New("is not an origin: bad IPv6 address")
		}
	} else if h, pt, ok := strings.Cut(rest, ":"); ok {
		host, port = h, pt
	}
	if host == "" || (!strings.HasPrefix(host, "[") && !validHost(host)) {
		return "", "", "", errors.New("is not an origin: the host must be a name or an address in ASCII (punycode for other names)")
	}
	if port != "" && port != "*" {
		n, perr := strconv.Atoi(port)
		if perr != nil || n < 1 || n > 65535 || port[0] == '0' {
			return "", "", "", errors.New("is not an origin: the port must be a number from 1 to 65535")
		}
	}
	if strings.Contains(o, ":") && port == "" && strings.HasSuffix(rest, ":") {
		return "", "", "", errors.New("is not an origin: empty port")
	}
	return scheme, host, port, nil
}

func isScheme(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// validHost accepts a lower-case host name or IPv4 address, with a
// wildcard left for addOrigin to judge.
func validHost(h string) bool {
	if strings.HasPrefix(h, ".") || strings.HasSuffix(h, ".") || strings.Contains(h, "..") {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '*') {
			return false
		}
	}
	return true
}

func validIPv6(a string) bool {
	if a == "" {
		return false
	}
	for i := 0; i < len(a); i++ {
		c := a[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c == ':' || c == '.') {
			return false
		}
	}
	return true
}

func (p *Policy) compileMethods(methods []string) error {
	if len(methods) == 0 {
		methods = DefaultMethods
	}
	any, err := starOrTokens("allow_methods", "a method name", methods)
	if err != nil || any {
		p.anyMethod = any
		return err
	}
	for _, m := range methods {
		p.methods = append(p.methods, strings.ToUpper(m))
	}
	p.allowMethods = strings.Join(p.methods, ", ")
	return nil
}

func (p *Policy) compileHeaders(c Config) error {
	any, err := starOrTokens("allow_headers", "a header name", c.AllowHeaders)
	if err != nil {
		return err
	}
	p.anyHeader = any
	if !any {
		p.headers = append(p.headers, c.AllowHeaders...)
	}
	any, err = starOrTokens("expose_headers", "a header name", c.ExposeHeaders)
	if err != nil {
		return err
	}
	if any && c.AllowCredentials {
		return errors.New("cors: expose_headers '*' cannot go with allow_credentials: browsers read '*' as a header name on credentialed requests; list the headers instead")
	}
	if len(c.ExposeHeaders) > 0 {
		p.exposeHeaders = strings.Join(c.ExposeHeaders, ", ")
	}
	return nil
}

// starOrTokens checks an option's list: '*' alone, which it reports, or
// RFC 9110 tokens, as method and field names are.
func starOrTokens(option, what string, list []string) (star bool, err error) {
	for _, v := range list {
		if v == "*" {
			if len(list) > 1 {
				return false, fmt.Errorf("cors: %s '*' must stand alone", option)
			}
			return true, nil
		}
		if !httpguts.ValidHeaderFieldName(v) {
			return false, fmt.Errorf("cors: %s: '%s' is not %s", option, v, what)
		}
	}
	return false, nil
}
