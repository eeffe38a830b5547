package signer

import (
	"errors"
	"math/big"
	"strings"
	"testing"

	"github.com/gowebpki/jcs"
)

// TestCanonicalizeNumbers: a number is accepted when JCS keeps its value,
// whatever happens to its spelling, and refused with ErrLossyNumber when
// JCS would change the value or the number lies beyond a double's range.
func TestCanonicalizeNumbers(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"0", "0"},
		{"-0", "0"},
		{"-0.0e-7", "0"},
		{"0e999999999999", "0"},
		{"1.0", "1"},
		{"1e3", "1000"},
		{"1E+2", "100"},
		{"4.50", "4.5"},
		{"0.1", "0.1"},
		{"1234.50", "1234.5"},
		{"-123456789012345", "-123456789012345"},
		{"9007199254740992", "9007199254740992"},   // 2^53
		{"-9007199254740992", "-9007199254740992"}, // -2^53
		{"18014398509481984", "18014398509481984"}, // 2^54, an exact double
		{"12345678901234567000", "12345678901234567000"},
		{"1.2345678901234567e19", "12345678901234567000"},
		{"1e21", "1e+21"},
		{"1E30", "1e+30"},
		{"0.000001", "0.000001"},
		{"1e-7", "1e-7"},
		{"5e-324", "5e-324"},
		{"1.7976931348623157e308", "1.7976931348623157e+308"},
		{"0.30000000000000004", "0.30000000000000004"},
		{"100000000000000000000000000000.000", "1e+29"},
		{"1e0000000000000000001", "10"},
	} {
		t.Run("accept "+tc.in, func(t *testing.T) {
			got, err := Canonicalize([]byte("[" + tc.in + "]"))
			if err != nil {
				t.Fatalf("Canonicalize(%s): %v", tc.in, err)
			}
			if string(got) != "["+tc.want+"]" {
				t.Fatalf("Canonicalize(%s) = %s, want [%s]", tc.in, got, tc.want)
			}
		})
	}
	for _, tc := range []struct{ in, becomes string }{
		{"12345678901234567890", "12345678901234567000"},
		{"9007199254740993", "9007199254740992"}, // 2^53 + 1
		{"-9007199254740993", "-9007199254740992"},
		{"12345678901234567890.0", "12345678901234567000"},
		{"1.2345678901234567890e19", "12345678901234567000"},
		{"0.10000000000000001", "0.1"},
		{"333333333.33333329", "333333333.3333333"},
		{"0.1000000000000000055511151231257827021181583404541015625", "0.1"},
		{"123456789012345678.9", "123456789012345680"},
		{"4e-324", "5e-324"},
		{"1e-400", "0"},
		{"-1e-400", "0"},
		{"1e400", ""},
		{"-1E+309", ""},
		{"1e99999999999", ""},
		{"1e-99999999999", ""},
	} {
		t.Run("refuse "+tc.in, func(t *testing.T) {
			for _, doc := range []string{tc.in, `{"g":` + tc.in + `}`, `[1,"x",{"a":[` + tc.in + `]}]`} {
				got, err := Canonicalize([]byte(doc))
				if !errors.Is(err, ErrLossyNumber) {
					t.Fatalf("Canonicalize(%s) = %s, %v; want ErrLossyNumber", doc, got, err)
				}
				if tc.becomes != "" && !strings.Contains(err.Error(), "signed as "+tc.becomes) {
					t.Fatalf("error %q does not say the number would become %s", err, tc.becomes)
				}
			}
			if _, err := PayloadDigest([]byte(tc.in)); !errors.Is(err, ErrLossyNumber) {
				t.Fatalf("PayloadDigest: %v, want ErrLossyNumber", err)
			}
		})
	}
	// Digits inside strings and member names are text, not numbers.
	if _, err := Canonicalize([]byte(`{"12345678901234567890":"12345678901234567890 \" 1e400"}`)); err != nil {
		t.Fatalf("digits in strings: %v", err)
	}
}

// TestSignRefusesLossyNumber: no path signs a payload with a changed number,
// and an envelope carrying one does not verify.
func TestSignRefusesLossyNumber(t *testing.T) {
	k := testKey(t)
	if env, err := Sign(testReceipt(), []byte(`{"g":12345678901234567890}`), k); !errors.Is(err, ErrLossyNumber) {
		t.Fatalf("Sign = %s, %v; want ErrLossyNumber", env, err)
	}
	// The signed form of 12345678901234567890 is 12345678901234567000, the
	// same double; a body that puts the longer text back must not verify as
	// if the payload said it.
	env := signTest(t, testReceipt(), []byte(`{"g":12345678901234567000}`), k)
	if _, err := Verify(env, testKeySet(t)); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	swapped := strings.Replace(string(env), "12345678901234567000", "12345678901234567890", 1)
	_, err := Verify([]byte(swapped), testKeySet(t))
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Err != ErrMalformed || ve.Step != StepEnvelope || !errors.Is(err, ErrLossyNumber) {
		t.Fatalf("Verify of an envelope with a lossy number: %v", err)
	}
}

// exactValue is the value of a JSON number as an exact rational.
func exactValue(s string) (*big.Rat, bool) {
	return new(big.Rat).SetString(s)
}

// FuzzCheckNumber compares the lossy-number check with exact rational
// arithmetic: a number is refused exactly when its JCS form has another
// value, or when it has none.
func FuzzCheckNumber(f *testing.F) {
	for _, s := range []string{"0", "-0.0", "1e21", "12345678901234567890", "9007199254740993", "0.1",
		"0.10000000000000001", "333333333.33333329", "4e-324", "1e400", "1.5e-7", "123.456e-2", "1e-0007"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 400 || !numberPattern(s) {
			return
		}
		err := checkNumber([]byte(s))
		in, ok := exactValue(s)
		if !ok {
			t.Fatalf("big.Rat cannot read %q", s)
		}
		f64, _ := in.Float64()
		canon, cerr := jcs.NumberToJSON(f64)
		want := cerr != nil
		if !want {
			out, _ := exactValue(canon)
			want = in.Cmp(out) != 0
		}
		if got := err != nil; got != want {
			t.Fatalf("checkNumber(%s) = %v, want lossy %v (canonical %s)", s, err, want, canon)
		}
	})
}

// numberPattern reports whether s follows the RFC 8259 number grammar,
// with exponents short enough for big.Rat.
func numberPattern(s string) bool {
	if _, ok := parseDecimal(s); !ok {
		return false
	}
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		e := strings.TrimLeft(strings.TrimLeft(s[i+1:], "+-"), "0")
		return len(e) <= 4
	}
	return true
}
