// Command caddy is Caddy with its standard modules and the gateway's, for
// those who build without xcaddy:
//
//	go build -o caddy ./cmd/caddy
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-gateway/gateway"
)

func main() { caddycmd.Main() }
