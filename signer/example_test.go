package signer_test

import (
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/sealpost/sealpost/signer"
)

// A receiver verifies a webhook body with the keys published by sealpost at
// /.well-known/jwks.json (or, for receipts older than the JWKS, /v1/keys).
func ExampleVerify() {
	jwks, err := os.ReadFile("testdata/golden/jwks.json")
	if err != nil {
		log.Fatal(err)
	}
	keys, err := signer.ParseKeySet(jwks)
	if err != nil {
		log.Fatal(err)
	}
	body, err := os.ReadFile("testdata/golden/envelope.json")
	if err != nil {
		log.Fatal(err)
	}

	v, err := signer.Verify(body, keys)
	switch {
	case err == nil:
		fmt.Println("verified", v.Receipt.ID, "for tenant", v.Receipt.Tenant)
		fmt.Println("signed at", v.Receipt.SignedAt, "payload checked:", v.PayloadPresent)
	case errors.Is(err, signer.ErrUnknownKey):
		fmt.Println("refresh the key set and retry:", err)
	default:
		fmt.Println("reject:", err)
	}

	// Any change to the signed receipt is caught.
	tampered := append([]byte(nil), body...)
	copy(tampered[len(tampered)-11:len(tampered)-3], "AAAAAAAA") // inside the signature
	_, err = signer.Verify(tampered, keys)
	var ve *signer.VerifyError
	if errors.As(err, &ve) {
		fmt.Println("step:", ve.Step, "outcome:", ve.Err)
	}
	// Output:
	// verified rcpt_01JD7Q8ZK3V4M5N6P7Q8R9S0TA for tenant acme
	// signed at 2026-11-22T10:00:00.130001Z payload checked: true
	// step: signature outcome: bad signature
}
