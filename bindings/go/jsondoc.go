package toolpool

import (
	"bytes"
	"encoding/json"
)

// strictJSON makes decodeJSON reject keys that the Go types do not have. Off in a
// program, so that an older binding keeps working with a newer library that adds keys;
// the package's tests turn it on (export_test.go), so a key the C API emits and Go lacks
// fails them.
var strictJSON = false

// decodeJSON decodes one JSON document that toolpool returned into v.
func decodeJSON(op, s string, v any) error {
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	if strictJSON {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return newError(CodeProtocol, op, "cannot decode toolpool's JSON: %v", err)
	}
	return nil
}
