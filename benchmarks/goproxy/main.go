// A minimal model-routing reverse proxy, written for the benchmarks as the stand-in for
// llama-swap's hop: standard library only (net/http + httputil.ReverseProxy). Like llama-swap it
// reads the whole request body to find "model", puts the body back, and flushes every write
// (FlushInterval -1) so streamed tokens pass at once. It starts and swaps nothing: it measures
// only what a Go proxy costs per request and per streamed event.
//
//	go build -o goproxy . && ./goproxy -listen 127.0.0.1:9000 -upstream bench=http://127.0.0.1:8001
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
)

type upstreams map[string]*httputil.ReverseProxy

func (u upstreams) String() string { return "" }

func (u upstreams) Set(value string) error {
	name, raw, _ := strings.Cut(value, "=")
	target, err := url.Parse(raw)
	if err != nil {
		return err
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.FlushInterval = -1
	proxy.Transport = &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	u[name] = proxy
	return nil
}

func main() {
	routes := upstreams{}
	listen := flag.String("listen", "127.0.0.1:9000", "address to listen on")
	flag.Var(routes, "upstream", "MODEL=URL (repeatable)")
	flag.Parse()

	handler := func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 100<<20))
		if err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		var request struct {
			Model string `json:"model"`
		}
		if len(body) > 0 {
			if err := json.Unmarshal(body, &request); err != nil {
				http.Error(w, "invalid JSON", http.StatusBadRequest)
				return
			}
		}
		proxy, ok := routes[request.Model]
		if !ok {
			http.Error(w, "model not found", http.StatusNotFound)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		proxy.ServeHTTP(w, r)
	}
	log.Printf("listening on http://%s", *listen)
	log.Fatal(http.ListenAndServe(*listen, http.HandlerFunc(handler)))
}
