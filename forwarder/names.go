package forwarder

import (
	"fmt"

	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/signer"
)

// Tenants, routes and receipt ids become tokens of queue subjects and store
// keys ("receipts.<tenant>.<group>", "dlq.<tenant>.<route>.<id>"), so each
// is checked before it is used in one: a '.', '*' or '>' would reach other
// subjects.

// checkTenant checks a tenant name by the ingress rule (ingress.ValidName).
func checkTenant(tenant string) error {
	if !ingress.ValidName(tenant) {
		return fmt.Errorf("%w: tenant %q is not %s", ErrInvalidInput, signer.Truncate(tenant, 64), ingress.NameRule)
	}
	return nil
}

// checkRoute checks a route name by the ingress rule (ingress.ValidRoute).
func checkRoute(route string) error {
	if !ingress.ValidRoute(route) {
		return fmt.Errorf("%w: route %q is not %s", ErrInvalidInput, signer.Truncate(route, 64), ingress.RouteRule)
	}
	return nil
}

// checkID checks a receipt id: 1 to 128 letters of either case, digits,
// '-' and '_', which is all a subject token needs. It is not the name rule
// because ids are not names people choose: sealpost mints them, "rcpt_" and
// an upper-case ULID (ingress.NewID).
func checkID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("%w: id empty or longer than 128 bytes", ErrInvalidInput)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: id %q has characters other than letters, digits, '-' and '_'", ErrInvalidInput, signer.Truncate(id, 64))
		}
	}
	return nil
}

// checkEndpoint checks an endpoint id by the route rule (ingress.ValidRoute).
func checkEndpoint(id string) error {
	if !ingress.ValidRoute(id) {
		return fmt.Errorf("%w: endpoint %q is not %s", ErrInvalidInput, signer.Truncate(id, 64), ingress.RouteRule)
	}
	return nil
}
