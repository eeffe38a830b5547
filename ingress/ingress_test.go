package ingress

import (
	"encoding/json"
	"testing"
)

func TestEncodeJSONKeepsHTML(t *testing.T) {
	env := json.RawMessage(`{"html":"<p>a&b</p>"}`)
	got, err := EncodeJSON(struct {
		Envelope json.RawMessage `json:"envelope"`
	}{env})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"envelope":{"html":"<p>a&b</p>"}}` + "\n"; string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
