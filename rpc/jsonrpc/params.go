package jsonrpc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
)

// decodeParams decodes a request's params strictly into v (a pointer to a
// struct): absent or null params are {}; a member that names no field — in
// any letter case other than the field's own — or has the wrong type is a
// -32602 naming the field. encoding/json alone would match names
// case-insensitively; exactNames covers that.
func decodeParams(raw json.RawMessage, v any) *Error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		raw = json.RawMessage("{}")
	}
	if err := strictDecode(raw, v); err != nil {
		return paramsError(err, raw, v)
	}
	if name := exactNames(raw, reflect.TypeOf(v)); name != "" {
		return Errorf(CodeInvalidParams, "invalid params: unknown field %q (field names are case-sensitive)", name)
	}
	return nil
}

// Unmarshal decodes raw strictly into v, as params are decoded: a member
// that names no field of v, in any letter case other than the field's own,
// is an error naming it. It is for the UnmarshalJSON of a params type that
// decodes an object itself, which the server's own check of names leaves
// to it.
func Unmarshal(raw []byte, v any) error {
	if err := strictDecode(raw, v); err != nil {
		return err
	}
	if name := exactNames(raw, reflect.TypeOf(v)); name != "" {
		return fmt.Errorf("unknown field %q (field names are case-sensitive)", name)
	}
	return nil
}

func strictDecode(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// unknownField is the one reader of encoding/json's unknown-field error,
// which has no type of its own: it returns the quoted name, or "".
func unknownField(err error) string {
	name, ok := strings.CutPrefix(err.Error(), "json: unknown field ")
	if !ok {
		return ""
	}
	return name
}

// paramsError turns encoding/json's errors into messages that name the field.
// Errors from a field's own UnmarshalJSON do not say which field failed, so
// then each member is decoded alone to find it.
func paramsError(err error, raw []byte, v any) *Error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return Errorf(CodeInvalidParams, "invalid params: params must be a JSON object")
		}
		return Errorf(CodeInvalidParams, "invalid params: field %q must be %s, not %s", te.Field, JSONKind(te.Type.Kind()), te.Value)
	}
	if name := unknownField(err); name != "" {
		return Errorf(CodeInvalidParams, "invalid params: unknown field %s", name)
	}
	if field, ferr := failingField(raw, v); field != "" {
		return Errorf(CodeInvalidParams, "invalid params: field %q: %v", field, ferr)
	}
	return Errorf(CodeInvalidParams, "invalid params: %v", err)
}

// failingField decodes each member of the params object into its own field of
// v's struct type and returns the first member that fails, with its error.
func failingField(raw []byte, v any) (string, error) {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return "", nil
	}
	var members map[string]json.RawMessage
	if json.Unmarshal(raw, &members) != nil {
		return "", nil
	}
	for name, f := range fieldsOf(t) {
		m, ok := members[name]
		if !ok {
			continue
		}
		if err := strictDecode(m, reflect.New(f.Type).Interface()); err != nil {
			return name, err
		}
	}
	return "", nil
}

// JSONKind names a Go kind as the JSON type it decodes from, in the one
// wording every type error uses ("must be a string").
func JSONKind(k reflect.Kind) string {
	switch k {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct, reflect.Pointer, reflect.Interface:
		return "an object"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "an integer"
	}
	return k.String()
}

var unmarshaler = reflect.TypeFor[json.Unmarshaler]()

// exactNames returns the first member name of raw, at any depth, that
// matches a struct field of t only case-insensitively, or "". A type with
// its own UnmarshalJSON is left to it.
func exactNames(raw []byte, t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshaler) {
		return ""
	}
	raw = bytes.TrimSpace(raw)
	switch t.Kind() {
	case reflect.Struct:
		if len(raw) == 0 || raw[0] != '{' {
			return ""
		}
		var members map[string]json.RawMessage
		if json.Unmarshal(raw, &members) != nil {
			return ""
		}
		fields := fieldsOf(t)
		for name, m := range members {
			f, ok := fields[name]
			if !ok {
				return name
			}
			if bad := exactNames(m, f.Type); bad != "" {
				return name + "." + bad
			}
		}
	case reflect.Slice, reflect.Array:
		if !needsCheck(t.Elem()) || len(raw) == 0 || raw[0] != '[' {
			return ""
		}
		var items []json.RawMessage
		json.Unmarshal(raw, &items)
		for i, m := range items {
			if bad := exactNames(m, t.Elem()); bad != "" {
				return strconv.Itoa(i) + "." + bad
			}
		}
	case reflect.Map:
		if !needsCheck(t.Elem()) || len(raw) == 0 || raw[0] != '{' {
			return ""
		}
		var members map[string]json.RawMessage
		json.Unmarshal(raw, &members)
		for k, m := range members {
			if bad := exactNames(m, t.Elem()); bad != "" {
				return k + "." + bad
			}
		}
	}
	return ""
}

// needsCheck reports whether values of t may hold a struct to check.
func needsCheck(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Slice, reflect.Array, reflect.Map:
		return !reflect.PointerTo(t).Implements(unmarshaler)
	}
	return false
}

var fieldCache sync.Map // reflect.Type → map[string]reflect.StructField

// fieldsOf maps the JSON names of t's exported fields to the fields.
func fieldsOf(t reflect.Type) map[string]reflect.StructField {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]reflect.StructField)
	}
	m := make(map[string]reflect.StructField)
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = f
	}
	fieldCache.Store(t, m)
	return m
}
