package main

import (
	"context"
	"errors"

	"github.com/sealpost/sealpost/audit"
)

// The audit log's proofs and its integrity gate on the HTTPS API.

// checkAudit runs the audit log's start-up check. A log that fails it (cut,
// edited, rolled back behind its outside copy) does not stop the gateway:
// health, the read-only API, admin and verification keep working, and
// ingest is refused until an operator has dealt with it.
func (g *gateway) checkAudit(ctx context.Context) {
	err := g.auditLog.Check(ctx)
	switch {
	case err == nil:
	case errors.Is(err, audit.ErrTampered):
		g.log.Error("audit log failed its integrity check; ingest is refused, everything else works (run sealpost audit verify)", "err", err)
	default:
		g.log.Warn("audit log start-up check incomplete; the checkpointer tries again", "err", err)
	}
}
