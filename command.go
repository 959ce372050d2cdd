package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "cache",
		Usage: "list|show|flush|purge [--address <interface>] [--config <path> [--adapter <name>]] [--timeout <duration>]",
		Short: "Lists, shows, flushes and purges the named caches of a running Caddy",
		Long: `
Works on the named caches of a running Caddy through its admin API, as the
/cache/ routes do: list them, show one, flush whole caches, or purge the
responses of given URLs, path prefixes or tags.

The admin endpoint is found as caddy stop and caddy reload find it: --address
if given; otherwise the admin address of the --config file (adapted with
--adapter); otherwise the default, localhost:2019 (or $CADDY_ADMIN). Each
answer is waited for up to --timeout (default 1m).

With --json, list and show print the admin API's answer unchanged.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Example = `  $ caddy cache list
  $ caddy cache show products --json
  $ caddy cache purge products --url /products/7 --tag product-7
  $ caddy cache flush products
  $ caddy cache flush --all --config /etc/caddy/Caddyfile`
			cmd.Args = cobra.NoArgs
			cmd.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
			adminFlags(cmd)

			list := &cobra.Command{
				Use:   "list [--json]",
				Short: "Lists the named caches: entries, size and bound, hit ratio, stored, evicted",
				Long: `
Prints one row per named cache: its entries, its resident size and bound,
its hit ratio (hits over lookups, "-" before the first lookup), and how many
responses it stored and evicted. With --json, prints the answer of
GET /cache/ unchanged.
`,
				Args: cobra.NoArgs,
				RunE: withArgs(cmdCacheList),
			}
			list.Flags().Bool("json", false, "Print the admin API's JSON answer")
			cmd.AddCommand(list)

			show := &cobra.Command{
				Use:   "show <name> [--json]",
				Short: "Shows one named cache",
				Long: `
Prints the counters of one named cache. With --json, prints the answer of
GET /cache/<name> unchanged.
`,
				Example: "  $ caddy cache show products",
				RunE:    withArgs(cmdCacheShow),
			}
			show.Flags().Bool("json", false, "Print the admin API's JSON answer")
			cmd.AddCommand(show)

			flush := &cobra.Command{
				Use:   "flush [<name>...] [--all]",
				Short: "Drops every entry of the named caches",
				Long: `
Drops every entry of the caches named, and with a Redis in cache_pool, of the
same caches on every node subscribed to it. Flushing every cache needs --all:
without names or --all, nothing is flushed.

Every name is checked before anything is flushed, so a mistyped name flushes
nothing.
`,
				Example: `  $ caddy cache flush products users
  $ caddy cache flush --all`,
				RunE: withArgs(cmdCacheFlush),
			}
			flush.Flags().Bool("all", false, "Flush every named cache")
			cmd.AddCommand(flush)

			purge := &cobra.Command{
				Use:   "purge <name> [--url <url>]... [--prefix <path>]... [--tag <tag>]...",
				Short: "Drops the responses of given URLs, path prefixes or tags from a cache",
				Long: `
Drops from one named cache every stored variant of the resources given:
--url takes a path (any host) or an absolute URL, --prefix a path that starts
with /, --tag a tag from the responses' Surrogate-Key (or tags_from) header.
Each flag may be repeated and the kinds combined. Prints how many responses
were removed.
`,
				Example: `  $ caddy cache purge products --url /products/7
  $ caddy cache purge products --prefix /catalog/ --tag product-7 --tag product-9`,
				RunE: withArgs(cmdCachePurge),
			}
			purge.Flags().StringArray("url", nil, "A URL or path whose responses to drop (repeatable)")
			purge.Flags().StringArray("prefix", nil, "A path prefix under which to drop every response (repeatable)")
			purge.Flags().StringArray("tag", nil, "A tag whose responses to drop (repeatable)")
			cmd.AddCommand(purge)
		},
	})

	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "rate-limit",
		Usage: "list|reset [--address <interface>] [--config <path> [--adapter <name>]] [--timeout <duration>]",
		Short: "Lists the rate-limit zones of a running Caddy and resets their keys",
		Long: `
Works on the rate-limit zones of a running Caddy through its admin API, as the
/rate_limit/ routes do: list the zones with their counters, or reset one key
or every key of a zone, so that the callers they stand for are allowed again.

The admin endpoint is found as caddy stop and caddy reload find it: --address
if given; otherwise the admin address of the --config file (adapted with
--adapter); otherwise the default, localhost:2019 (or $CADDY_ADMIN). Each
answer is waited for up to --timeout (default 1m).

With --json, list prints the admin API's answer unchanged.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Example = `  $ caddy rate-limit list
  $ caddy rate-limit reset per_client --key 203.0.113.7
  $ caddy rate-limit reset per_client`
			cmd.Args = cobra.NoArgs
			cmd.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
			adminFlags(cmd)

			list := &cobra.Command{
				Use:   "list [--json]",
				Short: "Lists the zones: algorithm, limit, keys held, allowed, limited",
				Long: `
Prints one row per rate-limit zone: its algorithm, its limit (events per
window, and the burst of a token or leaky bucket), the keys it holds, and how
many requests it allowed and limited (and would have limited, in dry run).
With --json, prints the answer of GET /rate_limit/ unchanged.
`,
				Args: cobra.NoArgs,
				RunE: withArgs(cmdRateLimitList),
			}
			list.Flags().Bool("json", false, "Print the admin API's JSON answer")
			cmd.AddCommand(list)

			reset := &cobra.Command{
				Use:   "reset <zone> [--key <key>]",
				Short: "Forgets one key of a zone, or every key of it",
				Long: `
Forgets what a zone counted for one key (--key), or for every key without
--key, in memory and in Redis. A key is given as the zone sees it: for a zone
with ipv4_prefix 24, the network (203.0.113.0/24).
`,
				Example: "  $ caddy rate-limit reset per_client --key 203.0.113.7",
				RunE:    withArgs(cmdRateLimitReset),
			}
			reset.Flags().String("key", "", "The key to reset (default: every key of the zone)")
			cmd.AddCommand(reset)
		},
	})
}

// adminFlags gives a command, and so its subcommands, the flags with which
// caddy stop and caddy reload find the admin endpoint.
func adminFlags(cmd *cobra.Command) {
	cmd.PersistentFlags().StringP("config", "c", "", "Configuration file to use to parse the admin address, if --address is not used")
	cmd.PersistentFlags().StringP("adapter", "a", "", "Name of config adapter to apply (when --config is used)")
	cmd.PersistentFlags().StringP("address", "", "", "The address to use to reach the admin API endpoint, if not the default")
	cmd.PersistentFlags().Duration("timeout", adminAnswerWait, "How long to wait for each answer of the admin API")
}

// withArgs hands a command its positional arguments, which Caddy's
// CommandFunc does not carry, and still goes through Caddy's wrapper so
// errors and exit statuses look like those of its own commands: an error
// is logged in one line and exits with status 1, as for caddy stop.
func withArgs(f func(caddycmd.Flags, []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		return caddycmd.WrapCommandFuncForCobra(func(fl caddycmd.Flags) (int, error) {
			if err := f(fl, args); err != nil {
				return caddy.ExitCodeFailedStartup, err
			}
			return caddy.ExitCodeSuccess, nil
		})(cmd, args)
	}
}

func cmdCacheList(fl caddycmd.Flags, _ []string) error {
	caches, printed, err := listed[cacheInfo](fl, cacheListing)
	if err != nil || printed {
		return err
	}
	tw := table()
	fmt.Fprintln(tw, "NAME\tENTRIES\tSIZE / BOUND\tHIT RATIO\tSTORED\tEVICTED")
	for _, c := range caches {
		fmt.Fprintf(tw, "%s\t%d\t%s / %s\t%s\t%d\t%d\n", c.Name, c.Entries,
			bytesOf(c.SizeBytes), bytesOf(c.MaxSize), hitRatio(c.Hits, c.Misses), c.Stored, c.Evicted)
	}
	return tw.Flush()
}

func cmdCacheShow(fl caddycmd.Flags, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("name one cache to show: caddy cache show <name> (caddy cache list names them)")
	}
	admin, err := adminFrom(fl)
	if err != nil {
		return err
	}
	name := args[0]
	body, err := admin.request(http.MethodGet, "/cache/"+url.PathEscape(name), nil)
	if err != nil {
		return admin.unknown(cacheListing, name, err)
	}
	if fl.Bool("json") {
		return printRaw(body)
	}
	var c cacheInfo
	if err := decodeAnswer(body, "GET /cache/"+name, &c); err != nil {
		return err
	}
	tw := table()
	fmt.Fprintf(tw, "name:\t%s\n", c.Name)
	fmt.Fprintf(tw, "entries:\t%d\n", c.Entries)
	fmt.Fprintf(tw, "size / bound:\t%s / %s\n", bytesOf(c.SizeBytes), bytesOf(c.MaxSize))
	fmt.Fprintf(tw, "hits:\t%d\n", c.Hits)
	fmt.Fprintf(tw, "misses:\t%d\n", c.Misses)
	fmt.Fprintf(tw, "hit ratio:\t%s\n", hitRatio(c.Hits, c.Misses))
	fmt.Fprintf(tw, "stored:\t%d\n", c.Stored)
	fmt.Fprintf(tw, "evicted:\t%d\n", c.Evicted)
	fmt.Fprintf(tw, "rejected:\t%d\n", c.Rejected)
	return tw.Flush()
}

// flushAnswer is the answer of DELETE /cache/ and DELETE /cache/<name>.
type flushAnswer struct {
	Flushed  []string `json:"flushed"`
	Nodes    int      `json:"nodes"`
	BusError string   `json:"bus_error"`
}

func cmdCacheFlush(fl caddycmd.Flags, names []string) error {
	all := fl.Bool("all")
	switch {
	case len(names) == 0 && !all:
		return fmt.Errorf("refusing to flush without a cache name: name the caches to flush (caddy cache flush products), or pass --all to flush every cache")
	case len(names) > 0 && all:
		return fmt.Errorf("give cache names or --all, not both")
	}
	admin, err := adminFrom(fl)
	if err != nil {
		return err
	}
	if all {
		return admin.flush("/cache/")
	}
	// Checking every name first keeps a mistyped one from leaving the
	// others half done.
	existing, err := admin.names(cacheListing)
	if err != nil {
		return err
	}
	for _, name := range names {
		if !slices.Contains(existing, name) {
			return unknownName("cache", name, existing)
		}
	}
	// A bus error leaves this node flushed: the other caches are flushed
	// too, and the error told once at the end.
	var untold []string
	var told *notToldError
	for _, name := range names {
		err := admin.flush("/cache/" + url.PathEscape(name))
		if nt, ok := errors.AsType[*notToldError](err); ok {
			untold, told = append(untold, name), nt
			continue
		}
		if err != nil {
			err = admin.unknown(cacheListing, name, err)
			if told != nil {
				err = errors.Join(told, err)
			}
			return err
		}
	}
	switch len(untold) {
	case 0:
		return nil
	case 1:
		return told
	}
	return fmt.Errorf("flushed %s on this node, but other nodes may not have been told: %s", strings.Join(untold, ", "), told.msg)
}

// flush sends one flush and reports it.
func (a adminAPI) flush(uri string) error {
	body, err := a.request(http.MethodDelete, uri, nil)
	if err != nil {
		return err
	}
	var answer flushAnswer
	if err := decodeAnswer(body, "DELETE "+uri, &answer); err != nil {
		return err
	}
	if len(answer.Flushed) == 0 {
		fmt.Println("no caches to flush")
	} else {
		fmt.Printf("flushed %s on %s\n", strings.Join(answer.Flushed, ", "), plural(answer.Nodes, "node"))
	}
	return busError(answer.BusError)
}

func cmdCachePurge(fl caddycmd.Flags, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("name one cache to purge: caddy cache purge <name> --url <url> (caddy cache list names them)")
	}
	name := args[0]
	urls, _ := fl.GetStringArray("url")
	prefixes, _ := fl.GetStringArray("prefix")
	tags, _ := fl.GetStringArray("tag")
	if len(urls)+len(prefixes)+len(tags) == 0 {
		return fmt.Errorf("nothing to purge: give --url, --prefix or --tag (caddy cache flush %s drops the whole cache)", name)
	}
	admin, err := adminFrom(fl)
	if err != nil {
		return err
	}
	target, err := json.Marshal(struct {
		URLs     []string `json:"urls,omitempty"`
		Prefixes []string `json:"prefixes,omitempty"`
		Tags     []string `json:"tags,omitempty"`
	}{urls, prefixes, tags})
	if err != nil {
		return err
	}
	uri := "/cache/" + url.PathEscape(name) + "/purge"
	body, err := admin.request(http.MethodPost, uri, target)
	if err != nil {
		return admin.unknown(cacheListing, name, err)
	}
	var answer struct {
		Removed  int    `json:"removed"`
		Nodes    int    `json:"nodes"`
		BusError string `json:"bus_error"`
	}
	if err := decodeAnswer(body, "POST "+uri, &answer); err != nil {
		return err
	}
	fmt.Printf("removed %s from %s on %s\n", plural(answer.Removed, "response"), name, plural(answer.Nodes, "node"))
	return busError(answer.BusError)
}

func cmdRateLimitList(fl caddycmd.Flags, _ []string) error {
	zones, printed, err := listed[zoneInfo](fl, zoneListing)
	if err != nil || printed {
		return err
	}
	tw := table()
	fmt.Fprintln(tw, "ZONE\tALGORITHM\tLIMIT\tKEYS\tALLOWED\tLIMITED")
	for _, z := range zones {
		limited := strconv.FormatUint(z.Limited, 10)
		if z.DryRunLimited > 0 {
			limited += fmt.Sprintf(" (dry run: %d)", z.DryRunLimited)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", z.Name, z.Algorithm, limitOf(z), z.Keys, z.Allowed, limited)
	}
	return tw.Flush()
}

func cmdRateLimitReset(fl caddycmd.Flags, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("name one zone to reset: caddy rate-limit reset <zone> [--key <key>] (caddy rate-limit list names them)")
	}
	admin, err := adminFrom(fl)
	if err != nil {
		return err
	}
	zone := args[0]
	uri := "/rate_limit/" + url.PathEscape(zone)
	key, oneKey := fl.String("key"), fl.Changed("key")
	if oneKey {
		uri += "?key=" + url.QueryEscape(key)
	}
	body, err := admin.request(http.MethodDelete, uri, nil)
	if err != nil {
		return admin.unknown(zoneListing, zone, err)
	}
	var answer struct {
		Reset     bool   `json:"reset"`
		ResetKeys int    `json:"reset_keys"`
		Nodes     int    `json:"nodes"`
		BusError  string `json:"bus_error"`
	}
	if err := decodeAnswer(body, "DELETE "+uri, &answer); err != nil {
		return err
	}
	nodes := plural(max(answer.Nodes, 1), "node")
	switch {
	case !oneKey:
		fmt.Printf("reset %s of zone %s on %s\n", plural(answer.ResetKeys, "key"), zone, nodes)
	case answer.Reset:
		fmt.Printf("reset key %q of zone %s on %s\n", key, zone, nodes)
	default:
		fmt.Printf("key %q of zone %s held nothing; nothing to reset\n", key, zone)
	}
	return busError(answer.BusError)
}

// adminAPI is the admin endpoint that a command's flags point at.
type adminAPI struct {
	addr    string
	timeout time.Duration // for each whole answer
}

// adminFrom finds the admin endpoint as caddy stop does: --address, else
// the admin address of the --config file, else the default.
func adminFrom(fl caddycmd.Flags) (adminAPI, error) {
	addr, err := caddycmd.DetermineAdminAPIAddress(fl.String("address"), nil, fl.String("config"), fl.String("adapter"))
	if err != nil {
		return adminAPI{}, fmt.Errorf("couldn't determine the admin API address: %v", err)
	}
	timeout, err := fl.GetDuration("timeout")
	if err != nil || timeout <= 0 {
		return adminAPI{}, fmt.Errorf("--timeout must be a positive duration, such as 30s")
	}
	return adminAPI{addr: addr, timeout: timeout}, nil
}

// answerError is an error answer of the admin API.
type answerError struct {
	request string // method and URI
	status  int
	message string
}

func (e *answerError) Error() string {
	return fmt.Sprintf("the admin API answered %s with HTTP %d: %s", e.request, e.status, e.message)
}

// apiErrorText is how caddycmd.AdminAPIRequest reports an answer of status
// 400 or more: it keeps neither the status nor the body apart, so this takes
// them back out of its text.
var apiErrorText = regexp.MustCompile(`(?s)^caddy responded with error: HTTP (\d+): (.*)$`)

// How long a command waits for the admin API's whole answer unless
// --timeout says, and how large an answer it reads: an endpoint that
// accepts and never answers, or answers without end, must not hold the
// command for ever.
const (
	adminAnswerWait = time.Minute
	maxAdminAnswer  = 64 << 20
)

// request calls the admin API through caddycmd.AdminAPIRequest, which sets
// the Origin the endpoint checks and dials unix sockets too, and returns
// the answer's body. AdminAPIRequest takes no deadline: the call runs
// aside, and is given up on after the timeout (the command then exits).
func (a adminAPI) request(method, uri string, body []byte) ([]byte, error) {
	type result struct {
		answer []byte
		err    error
	}
	done := make(chan result, 1)
	go func() {
		answer, err := a.call(method, uri, body)
		done <- result{answer, err}
	}()
	timer := time.NewTimer(a.timeout)
	defer timer.Stop()
	select {
	case r := <-done:
		return r.answer, r.err
	case <-timer.C:
		return nil, fmt.Errorf("the admin endpoint at %s did not answer %s %s within %v (--timeout)", a.addr, method, uri, a.timeout)
	}
}

func (a adminAPI) call(method, uri string, body []byte) ([]byte, error) {
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	resp, err := caddycmd.AdminAPIRequest(a.addr, method, uri, nil, reader)
	if err != nil {
		return nil, a.explain(method+" "+uri, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAdminAnswer+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("reading the admin API's answer to %s %s: %v", method, uri, err)
	case len(answer) > maxAdminAnswer:
		return nil, fmt.Errorf("the admin API's answer to %s %s is over %d MiB", method, uri, maxAdminAnswer>>20)
	}
	return answer, nil
}

// explain turns an error of caddycmd.AdminAPIRequest into one an operator
// can act on.
func (a adminAPI) explain(request string, err error) error {
	text := err.Error()
	if m := apiErrorText.FindStringSubmatch(text); m != nil {
		status, _ := strconv.Atoi(m[1])
		return &answerError{request: request, status: status, message: messageOf([]byte(m[2]))}
	}
	if cause, ok := strings.CutPrefix(text, "performing request: "); ok {
		// The cause reads `Get "http://…": dial tcp …: connect: connection
		// refused`; its last part is the news.
		if i := strings.LastIndex(cause, ": "); i >= 0 {
			cause = cause[i+2:]
		}
		return fmt.Errorf("cannot reach the admin endpoint at %s (%s): is Caddy running with its admin API there? Give its address with --address, or its config with --config", a.addr, cause)
	}
	return err
}

// messageOf returns the message of an admin error body, {"error":"..."},
// or the body itself when it is not one.
func messageOf(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	return strings.TrimSpace(string(body))
}

func decodeAnswer(body []byte, request string, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("reading the admin API's answer to %s: %v", request, err)
	}
	return nil
}

// listing is a route of the admin API that lists the caches or the zones.
type listing struct {
	kind  string // what it lists, for messages
	uri   string
	field string // of the answer, holding the list
}

var (
	cacheListing = listing{kind: "cache", uri: "/cache/", field: "caches"}
	zoneListing  = listing{kind: "zone", uri: "/rate_limit/", field: "zones"}
)

// list fetches a listing. A 404 there means the endpoint has no routes
// of ours at all.
func (a adminAPI) list(l listing) ([]byte, error) {
	body, err := a.request(http.MethodGet, l.uri, nil)
	if ae, ok := errors.AsType[*answerError](err); ok && ae.status == http.StatusNotFound {
		return nil, fmt.Errorf("the admin endpoint at %s has no %s routes: is that Caddy built with github.com/caddy-gateway/gateway?", a.addr, l.uri)
	}
	return body, err
}

// listed fetches a listing from the admin endpoint the flags name and
// returns its items; with --json it prints the answer as it came instead,
// and says so.
func listed[T any](fl caddycmd.Flags, l listing) (items []T, printed bool, err error) {
	admin, err := adminFrom(fl)
	if err != nil {
		return nil, false, err
	}
	body, err := admin.list(l)
	if err != nil {
		return nil, false, err
	}
	if fl.Bool("json") {
		return nil, true, printRaw(body)
	}
	items, err = decodeListing[T](body, l)
	return items, false, err
}

// decodeListing decodes the items of a listing's answer.
func decodeListing[T any](body []byte, l listing) ([]T, error) {
	var answer map[string][]T
	if err := decodeAnswer(body, "GET "+l.uri, &answer); err != nil {
		return nil, err
	}
	return answer[l.field], nil
}

// names returns the names a listing holds, in its order.
func (a adminAPI) names(l listing) ([]string, error) {
	body, err := a.list(l)
	if err != nil {
		return nil, err
	}
	items, err := decodeListing[struct {
		Name string `json:"name"`
	}](body, l)
	var names []string
	for _, item := range items {
		names = append(names, item.Name)
	}
	return names, err
}

// unknown turns the 404 of a request about one cache or zone into an error
// that names those there are; other errors pass through.
func (a adminAPI) unknown(l listing, name string, err error) error {
	if ae, ok := errors.AsType[*answerError](err); !ok || ae.status != http.StatusNotFound {
		return err
	}
	names, listErr := a.names(l)
	if listErr != nil {
		return err
	}
	return unknownName(l.kind, name, names)
}

func unknownName(kind, name string, names []string) error {
	if len(names) == 0 {
		return fmt.Errorf("unknown %s %q: the running config has no %ss", kind, name, kind)
	}
	return fmt.Errorf("unknown %s %q: the %ss are %s", kind, name, kind, strings.Join(names, ", "))
}

// busError reports a flush or purge that was done on this node but may not
// have reached the others through Redis.
func busError(msg string) error {
	if msg == "" {
		return nil
	}
	return &notToldError{msg}
}

// notToldError is an invalidation done on the node the command reached,
// whose bus could not tell every other node.
type notToldError struct{ msg string }

func (e *notToldError) Error() string {
	return "done on this node, but other nodes may not have been told: " + e.msg
}

func printRaw(body []byte) error {
	_, err := os.Stdout.Write(body)
	return err
}

func table() *tabwriter.Writer { return tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0) }

func bytesOf(n int64) string { return humanize.IBytes(uint64(max(n, 0))) }

// hitRatio is hits over lookups as a percentage, "-" before any lookup.
func hitRatio(hits, misses uint64) string {
	if hits+misses == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(hits)/float64(hits+misses))
}

// limitOf says a zone's limit: "100 per 1m", and the burst where the
// algorithm has one.
func limitOf(z zoneInfo) string {
	limit := fmt.Sprintf("%d per %s", z.Events, shortDuration(z.Window))
	if z.Burst > 0 && (z.Algorithm == "token_bucket" || z.Algorithm == "leaky_bucket") {
		limit += fmt.Sprintf(", burst %d", z.Burst)
	}
	return limit
}

// shortDuration drops the zero units of a Go duration: "1h0m0s" is "1h".
func shortDuration(s string) string {
	d, err := time.ParseDuration(s)
	if err != nil {
		return s
	}
	s = d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
