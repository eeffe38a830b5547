package keyring

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/sealpost/sealpost/signer"
)

// FormatTable writes keys as the table `sealpost keys list` prints: one line
// per key with its status and windows in UTC.
func FormatTable(w io.Writer, keys []signer.PublicKey) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tSTATUS\tPUBLISHED\tSIGNS FROM\tSIGNS UNTIL\tIN JWKS UNTIL\tREVOKED")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.KID, orDash(k.Status),
			tableTime(k.IssuedAt), tableTime(k.NotBefore), tableTime(k.SignsUntil), tableTime(k.Expires), tableTime(k.RevokedAt))
	}
	return tw.Flush()
}

func tableTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
