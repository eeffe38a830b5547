// Package audit is sealpost's append-only, tamper-evident log of every API
// call, authentication, admin action and message step.
//
// Entries are stored in the JetStream stream AUDIT (deny delete, deny purge,
// MaxAge retention), several per message: Append calls that arrive while a
// publish is in flight share the next one (group commit), and each returns
// once JetStream acknowledged its entry. A stored record is the JCS (RFC
// 8785) form of the entry plus its leaf index, the leaf hash of the record
// before it and that record's store time; the records are the leaves of an
// RFC 6962 Merkle tree in index order. Every publish names the stream
// sequence it must follow, so several instances can share the stream.
//
// Checkpoints (C2SP tlog-checkpoint bodies in C2SP signed notes, Ed25519
// keyring keys, note key name = origin) are stored in AUDIT_CHECKPOINTS with
// the compact range of the tree, from which a restarted writer and the
// verifier of a pruned log resume. Verify recomputes the tree and compares it
// with every checkpoint; Export writes JSON Lines with inclusion proofs that
// VerifyExport (or any RFC 6962 implementation) checks on its own.
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
	// ActionQuarantined: the queued message could not be opened or parsed
	// and was moved, still sealed, to the QUARANTINE stream.
	ActionQuarantined = "message.quarantined"
	ActionRedeliver   = "message.redeliver"
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
