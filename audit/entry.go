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

import "github.com/sealpost/sealpost/audit/entry"

// Entry is one audit record; see package entry, which defines it without
// depending on the log.
type Entry = entry.Entry

// Actions of message steps.
const (
	ActionReceived     = entry.ActionReceived
	ActionQueued       = entry.ActionQueued
	ActionSigned       = entry.ActionSigned
	ActionDelivered    = entry.ActionDelivered
	ActionFailed       = entry.ActionFailed
	ActionDeadLettered = entry.ActionDeadLettered
	ActionDeleted      = entry.ActionDeleted
	ActionQuarantined  = entry.ActionQuarantined
	ActionRedeliver    = entry.ActionRedeliver
)

// Actions of API calls, authentication and administration.
const (
	ActionAPICall       = entry.ActionAPICall
	ActionAuthSuccess   = entry.ActionAuthSuccess
	ActionAuthFailure   = entry.ActionAuthFailure
	ActionKeyRotate     = entry.ActionKeyRotate
	ActionKeyRevoke     = entry.ActionKeyRevoke
	ActionAPIKeyCreate  = entry.ActionAPIKeyCreate
	ActionAPIKeyRevoke  = entry.ActionAPIKeyRevoke
	ActionConfigReload  = entry.ActionConfigReload
	ActionDLQReplay     = entry.ActionDLQReplay
	ActionReceiptDelete = entry.ActionReceiptDelete
	ActionExport        = entry.ActionExport
)

// Outcomes.
const (
	OutcomeSuccess = entry.OutcomeSuccess
	OutcomeFailure = entry.OutcomeFailure
	OutcomeDenied  = entry.OutcomeDenied
)
