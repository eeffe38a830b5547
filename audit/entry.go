// Package audit is sealpost's append-only, tamper-evident log of every API
// call, authentication, admin action and message step.
package audit

import "time"

// Actions of message steps.
const (
	ActionReceived     = "message.received"
	ActionQueued       = "message.queued"
	ActionSigned       = "message.signed"
	ActionDelivered    = "message.delivered"
	ActionFailed       = "message.failed"
	ActionDeadLettered = "message.dead_lettered"
	ActionDeleted      = "message.deleted"
	ActionRedeliver    = "message.redeliver"
)

// Outcomes.
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
	OutcomeDenied  = "denied"
)

// Entry is one audit record. It never holds payload content, secrets or the
// local part of a mail address.
type Entry struct {
	// Time of the event, UTC. Set by Append when zero.
	Time time.Time `json:"time"`
	// Actor: "apikey:<id>", "admin", "system", "smtp:<remote ip>", ...
	Actor string `json:"actor"`
	// Action: "api.call", "auth.success", "auth.failure", "key.rotate",
	// "key.revoke", "apikey.create", "apikey.revoke", "config.reload",
	// "dlq.replay", "audit.export", or one of the message actions above.
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
