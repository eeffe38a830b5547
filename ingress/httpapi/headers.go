package httpapi

import "net/http"

// securityHeaders sets the headers every answer carries before the handler
// runs, so a handler may still replace them (the JWKS and the public key
// history are cacheable and say so): Cache-Control: no-store, since answers
// carry tenant data or tokens, X-Content-Type-Options: nosniff, and on the
// HTTPS server Strict-Transport-Security for a year, subdomains included.
func securityHeaders(https bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		if https {
			h.Set("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
		}
		next.ServeHTTP(w, r)
	})
}
