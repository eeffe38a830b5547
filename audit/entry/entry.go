// Package entry defines an audit log entry and the actions and outcomes it
// names. It imports nothing of sealpost, so that a package which only
// records events (the ingresses, the keyring, the forwarder) depends on the
// shape of an entry and not on the log that stores it. Package audit
// re-exports everything here.
package entry

import "time"

// Entry is one audit record. It never holds payload content, secrets or the
// local part of a mail address.
type Entry struct {
	// Time of the event, UTC. Set by Append when zero.
	Time time.Time `json:"time"`
	// Actor: "apikey:<id>", "admin", "system", "smtp:<remote ip>", ...
	Actor string `json:"actor"`
	// Action: "api.call", "auth.success", "auth.failure", "key.rotate",
	// "key.revoke", "apikey.create", "apikey.revoke", "config.reload",
	// "dlq.replay", "audit.export", or one of the message actions below.
	Action string `json:"action"`
	// Tenant the event belongs to; empty for system-wide events.
	Tenant string `json:"tenant,omitempty"`
	// Target: receipt id, key id, route, API route template, ...
	Target string `json:"target,omitempty"`
	// Outcome: success, failure or denied.
	Outcome string `json:"outcome"`
	// RequestID ties the entry to an API request or SMTP transaction.
	RequestID string `json:"request_id,omitempty"`
	// Details holds small, non-sensitive attributes (status code, attempt,
	// error class, remote address, method).
	Details map[string]string `json:"details,omitempty"`
}

// Actions of message steps.
const (
	ActionReceived     = "message.received"
	ActionQueued       = "message.queued"
	ActionSigned       = "message.signed"
	ActionDelivered    = "message.delivered"
	ActionFailed       = "message.failed"
	ActionDeadLettered = "message.dead_lettered"
	ActionDeleted      = "message.deleted"
	// ActionQuarantined: the queued message could not be opened or parsed
	// and was moved, still sealed, to the QUARANTINE stream.
	ActionQuarantined = "message.quarantined"
	ActionRedeliver   = "message.redeliver"
)

// Actions of API calls, authentication and administration.
const (
	ActionAPICall       = "api.call"
	ActionAuthSuccess   = "auth.success"
	ActionAuthFailure   = "auth.failure"
	ActionKeyRotate     = "key.rotate"
	ActionKeyRevoke     = "key.revoke"
	ActionAPIKeyCreate  = "apikey.create"
	ActionAPIKeyRevoke  = "apikey.revoke"
	ActionConfigReload  = "config.reload"
	ActionDLQReplay     = "dlq.replay"
	ActionReceiptDelete = "receipt.delete"
	ActionExport        = "audit.export"
)

// Outcomes.
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
	OutcomeDenied  = "denied"
)
