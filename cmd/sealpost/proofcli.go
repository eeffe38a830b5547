package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/signer"
)

// witnessFlags are the witness policy of the commands that verify
// checkpoints as a client: --witness VKEY (repeated) and --quorum N.
type witnessFlags struct {
	vkeys  []string
	quorum int
}

func addWitnessFlags(fs *flag.FlagSet) *witnessFlags {
	w := &witnessFlags{}
	fs.Func("witness", "a witness's verifier `vkey` whose cosignature counts (repeat for each witness)", func(s string) error {
		w.vkeys = append(w.vkeys, s)
		return nil
	})
	fs.IntVar(&w.quorum, "quorum", 0, "cosignatures required of the --witness list (default: a majority)")
	return w
}

// policy returns the witness policy, nil without --witness.
func (w *witnessFlags) policy() (*audit.WitnessPolicy, error) {
	if len(w.vkeys) == 0 {
		if w.quorum != 0 {
			return nil, errors.New("--quorum needs --witness")
		}
		return nil, nil
	}
	p := &audit.WitnessPolicy{Quorum: w.quorum}
	if p.Quorum == 0 {
		p.Quorum = len(w.vkeys)/2 + 1
	}
	for _, v := range w.vkeys {
		name, key, err := audit.ParseCosignerKey(v)
		if err != nil {
			return nil, fmt.Errorf("--witness %.40q: %w", v, err)
		}
		p.Witnesses = append(p.Witnesses, audit.Witness{Name: name, Key: key})
	}
	return p, p.Check()
}

// verifyProofFile checks a proof document offline and prints what it
// proves. A receipt proof must be of receiptID when that is not empty.
func verifyProofFile(path, receiptID string, keys *signer.KeySet, policy *audit.WitnessPolicy, stdout io.Writer) error {
	doc, err := readProof(path)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		fmt.Fprintf(stdout, "FAILED %s: %v\n", path, err)
		return exitError{code: 1}
	}
	typ, err := audit.ProofType(doc)
	if err != nil {
		return fail(err)
	}
	switch typ {
	case audit.TypeReceiptProof:
		p, cp, err := audit.VerifyReceiptProof(doc, keys, policy)
		if err != nil {
			return fail(err)
		}
		if receiptID != "" && p.ReceiptID != receiptID {
			return fail(fmt.Errorf("the proof is of receipt %s, the receipt is %s", p.ReceiptID, receiptID))
		}
		fmt.Fprintf(stdout, "OK %s: %d audit entries of receipt %s are in the log's tree of size %d, %s\n",
			path, len(p.Entries), p.ReceiptID, cp.Size, describeCheckpoint(cp))
		for _, e := range p.Entries {
			r, _ := audit.DecodeRecord(e.Record)
			fmt.Fprintf(stdout, "  leaf %d: %s %s at %s\n", e.Index, r.Action, r.Outcome, r.Time.Format(time.RFC3339Nano))
		}
		if p.Pending > 0 {
			fmt.Fprintf(stdout, "  (%d newer entries are not covered by this checkpoint yet)\n", p.Pending)
		}
	case audit.TypeConsistencyProof:
		_, from, to, err := audit.VerifyConsistencyProof(doc, keys, policy)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "OK %s: the log's tree of size %d extends the tree of size %d; the newer %s\n",
			path, to.Size, from.Size, describeCheckpoint(to))
	default:
		return fail(fmt.Errorf("unknown proof type %q", typ))
	}
	return nil
}

// describeCheckpoint says when a verified checkpoint was signed and who
// cosigned it.
func describeCheckpoint(cp audit.Checkpoint) string {
	var b strings.Builder
	if cp.Time.IsZero() {
		b.WriteString("signed (no signed time)")
	} else {
		b.WriteString("signed at " + cp.Time.Format(time.RFC3339))
	}
	if len(cp.Cosigned) > 0 {
		var names []string
		for n := range cp.Cosigned {
			names = append(names, n)
		}
		slices.Sort(names)
		b.WriteString(", cosigned by " + strings.Join(names, ", "))
	}
	return b.String()
}

func readProof(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, audit.MaxProofDocument+1))
	if err != nil {
		return nil, err
	}
	if len(b) > audit.MaxProofDocument {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, audit.MaxProofDocument)
	}
	return b, nil
}
