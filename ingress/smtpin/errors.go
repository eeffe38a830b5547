package smtpin

import (
	"context"
	"errors"
	"io"
	"net"

	"github.com/emersion/go-smtp"

	"github.com/sealpost/sealpost/ingress"
)

// Outcomes of the SMTP dialogue and of parsing. smtpReply maps each of them
// to exactly one SMTP answer.
var (
	// ErrMessageTooLarge: the message (or its payload) exceeds a size limit.
	ErrMessageTooLarge = errors.New("smtpin: message too large")
	// ErrHeaderTooLarge: the message header block exceeds MaxHeaderBytes.
	ErrHeaderTooLarge = errors.New("smtpin: message header too large")
	// ErrMIMETooDeep: multipart bodies nest deeper than MaxMIMEDepth.
	ErrMIMETooDeep = errors.New("smtpin: MIME nesting too deep")
	// ErrTooManyParts: the message has more than MaxMIMEParts parts.
	ErrTooManyParts = errors.New("smtpin: too many MIME parts")
	// ErrReportRefused: a message to the TLS report address holds no
	// readable TLS-RPT report (ReportSink errors wrap it).
	ErrReportRefused = errors.New("smtpin: TLS report refused")
	// ErrMalformed: the message header cannot be parsed at all.
	ErrMalformed = errors.New("smtpin: malformed message")

	errTLSRequired      = errors.New("smtpin: STARTTLS required")
	errUnknownRecipient = errors.New("smtpin: unknown recipient")
	errSenderNotAllowed = errors.New("smtpin: sender not allowed for route")
	errDKIMRequired     = errors.New("smtpin: route requires a passing aligned DKIM signature")
	errShuttingDown     = errors.New("smtpin: shutting down")
	errClosing          = errors.New("smtpin: connection closing after a limit")
	errPayloadTooLarge  = errors.New("smtpin: message text too large for one payload")
)

// smtpReply maps an error to the SMTP answer the client sees. It is the only
// place where errors become SMTP codes. The result is returned to go-smtp
// unwrapped: go-smtp recognises *smtp.SMTPError by type assertion only, and
// anything else becomes a permanent 554.
func smtpReply(err error) *smtp.SMTPError {
	reply := func(code int, enh smtp.EnhancedCode, msg string) *smtp.SMTPError {
		return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: msg}
	}
	var se *smtp.SMTPError
	var ne net.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &se):
		return se
	case errors.Is(err, errTLSRequired):
		return reply(530, smtp.EnhancedCode{5, 7, 0}, "Must issue a STARTTLS command first")
	case errors.Is(err, errUnknownRecipient):
		return reply(550, smtp.EnhancedCode{5, 1, 1}, "No such recipient here")
	case errors.Is(err, errSenderNotAllowed):
		return reply(550, smtp.EnhancedCode{5, 7, 1}, "Sender not authorized for this recipient")
	case errors.Is(err, errDKIMRequired):
		return reply(550, smtp.EnhancedCode{5, 7, 20}, "No passing DKIM signature aligned with the From domain")
	case errors.Is(err, ErrMessageTooLarge):
		return reply(552, smtp.EnhancedCode{5, 3, 4}, "Message size exceeds fixed maximum message size")
	case errors.Is(err, ErrHeaderTooLarge):
		return reply(552, smtp.EnhancedCode{5, 3, 4}, "Message header exceeds fixed maximum size")
	case errors.Is(err, errPayloadTooLarge), errors.Is(err, ingress.ErrTooLarge):
		return reply(552, smtp.EnhancedCode{5, 3, 4}, "Message text too large")
	case errors.Is(err, ErrMIMETooDeep):
		return reply(554, smtp.EnhancedCode{5, 6, 0}, "MIME structure nested too deeply")
	case errors.Is(err, ErrTooManyParts):
		return reply(554, smtp.EnhancedCode{5, 6, 0}, "Too many MIME parts")
	case errors.Is(err, smtp.ErrTooLongLine):
		return reply(554, smtp.EnhancedCode{5, 6, 0}, "Message has a line longer than 2000 octets")
	case errors.Is(err, ErrReportRefused):
		return reply(554, smtp.EnhancedCode{5, 6, 0}, "No readable TLS-RPT report in the message")
	case errors.Is(err, ErrMalformed):
		return reply(554, smtp.EnhancedCode{5, 6, 0}, "Message could not be parsed")
	case errors.Is(err, errClosing):
		return reply(421, smtp.EnhancedCode{4, 4, 2}, "Connection closing")
	case errors.Is(err, errShuttingDown):
		return reply(421, smtp.EnhancedCode{4, 3, 2}, "Service shutting down, try again later")
	case ingress.IsTemporary(err), errors.Is(err, context.DeadlineExceeded):
		// Checked before net.Error: a queue or KMS deadline is a failure of
		// ours (4.3.0), not of the connection.
		return reply(451, smtp.EnhancedCode{4, 3, 0}, "Temporary failure, try again later")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return reply(451, smtp.EnhancedCode{4, 4, 2}, "Connection lost before the end of the message")
	case errors.As(err, &ne) && ne.Timeout():
		return reply(451, smtp.EnhancedCode{4, 4, 2}, "Timeout, try again later")
	default:
		return reply(554, smtp.EnhancedCode{5, 0, 0}, "Transaction failed")
	}
}
