package ingress

// Tenant names, route names and API key ids appear in URLs, queue subjects,
// store keys, receipts and audit entries. They follow one rule, defined
// here and checked wherever a name comes in: the configuration, the ingest
// path, the admin API, the forwarder.

// MaxNameLen is the longest tenant name, route name or API key id.
const MaxNameLen = 63

// NameRule and RouteRule describe ValidName and ValidRoute in error messages.
const (
	NameRule  = "1-63 of a-z, 0-9 and '-', starting with a letter or digit"
	RouteRule = "1-63 of a-z, 0-9, '_' and '-', starting with a letter or digit"
)

// ValidName reports whether s is a valid tenant name or API key id: 1 to
// 63 of a-z, 0-9 and '-', the first a letter or digit. API key ids have no
// '_' because the last '_' of a token "sp_<id>_<secret>" ends the id.
func ValidName(s string) bool { return validName(s, false) }

// ValidRoute reports whether s is a valid route name: as ValidName, with
// '_' allowed after the first character.
func ValidRoute(s string) bool { return validName(s, true) }

func validName(s string, underscore bool) bool {
	if s == "" || len(s) > MaxNameLen || s[0] == '-' || s[0] == '_' {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-':
		case c == '_' && underscore:
		default:
			return false
		}
	}
	return true
}
