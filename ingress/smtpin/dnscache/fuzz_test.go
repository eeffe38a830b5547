package dnscache

import (
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// FuzzParseReply feeds arbitrary bytes to the reply parser: it must answer
// or fail, never panic, and never report records of another type.
func FuzzParseReply(f *testing.F) {
	name := dnsmessage.MustNewName("vendor.example.")
	for _, t := range []dnsmessage.Type{dnsmessage.TypeTXT, dnsmessage.TypeA, dnsmessage.TypeMX} {
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, Response: true})
		b.StartQuestions()
		b.Question(dnsmessage.Question{Name: name, Type: t, Class: dnsmessage.ClassINET})
		b.StartAnswers()
		h := dnsmessage.ResourceHeader{Name: name, Type: t, Class: dnsmessage.ClassINET, TTL: 60}
		switch t {
		case dnsmessage.TypeTXT:
			b.TXTResource(h, dnsmessage.TXTResource{TXT: []string{"v=spf1 -all"}})
		case dnsmessage.TypeA:
			b.AResource(h, dnsmessage.AResource{A: [4]byte{192, 0, 2, 1}})
		case dnsmessage.TypeMX:
			b.MXResource(h, dnsmessage.MXResource{Pref: 10, MX: name})
		}
		msg, _ := b.Finish()
		f.Add(msg, uint16(t))
	}
	f.Fuzz(func(t *testing.T, reply []byte, qtype uint16) {
		typ := dnsmessage.Type(qtype)
		r, err := parseReply(reply, 7, name, typ)
		if err != nil {
			return
		}
		if typ != dnsmessage.TypeTXT && len(r.TXT) > 0 || typ != dnsmessage.TypeMX && len(r.MX) > 0 {
			t.Fatalf("records of another type for %v: %+v", typ, r)
		}
	})
}
