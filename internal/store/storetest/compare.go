package storetest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

var (
	timeType = reflect.TypeFor[time.Time]()
	rawType  = reflect.TypeFor[json.RawMessage]()
	byteType = reflect.TypeFor[[]byte]()
)

// checkEqual reports how got differs from want, what names the value. It is
// the store's notion of equality, not reflect.DeepEqual:
//
//   - A time equals want truncated to the microsecond, and must be in UTC; a
//     zero want must come back zero (Tx: "Times are stored with microsecond
//     precision, in UTC; a zero time stays zero").
//   - An empty slice or map equals a nil one: the contract does not tell them
//     apart. Pointers do differ by nil-ness (Attempt.ExitCode, Attempt.Work).
//   - json.RawMessage: nil equals empty, and either differs from any JSON
//     value (Attempt.Outputs nil vs {}). Other values compare as decoded JSON,
//     so a store may reformat them.
//   - Work.Options compare as JSON: the spec decodes options into Go types
//     ([]string, int, time.Duration) that no JSON encoding of Work keeps.
//     Every other map[string]any (Run.Params) must keep its Go types.
func checkEqual(t *testing.T, what string, want, got any) {
	t.Helper()
	compare(t, what, want, got, false)
}

// checkEqualExact is checkEqual except that json.RawMessage values must come
// back byte for byte.
func checkEqualExact(t *testing.T, what string, want, got any) {
	t.Helper()
	compare(t, what, want, got, true)
}

func compare(t *testing.T, what string, want, got any, exactJSON bool) {
	t.Helper()
	d := differ{exactJSON: exactJSON}
	d.walk(what, reflect.ValueOf(want), reflect.ValueOf(got))
	if len(d.diffs) > 0 {
		t.Errorf("%s differs from what was written:\n\t%s", what, strings.Join(d.diffs, "\n\t"))
	}
}

type differ struct {
	exactJSON bool
	diffs     []string
}

func (d *differ) add(path string, format string, args ...any) {
	d.diffs = append(d.diffs, path+": "+fmt.Sprintf(format, args...))
}

func (d *differ) walk(path string, want, got reflect.Value) {
	if !want.IsValid() || !got.IsValid() {
		if want.IsValid() != got.IsValid() {
			d.add(path, "got %v, want %v", got, want)
		}
		return
	}
	if want.Type() != got.Type() {
		d.add(path, "got %#v (%s), want %#v (%s)", got.Interface(), got.Type(), want.Interface(), want.Type())
		return
	}
	switch want.Type() {
	case timeType:
		w, g := want.Interface().(time.Time), got.Interface().(time.Time)
		switch {
		case w.IsZero() && !g.IsZero():
			d.add(path, "got %s, want the zero time", g.Format(time.RFC3339Nano))
		case w.IsZero():
		case !g.Equal(w.Truncate(time.Microsecond)):
			d.add(path, "got %s, want %s (%s truncated to microseconds)",
				g.Format(time.RFC3339Nano), w.Truncate(time.Microsecond).UTC().Format(time.RFC3339Nano), w.Format(time.RFC3339Nano))
		case g.Location() != time.UTC:
			d.add(path, "got %s in location %q, want UTC", g.Format(time.RFC3339Nano), g.Location())
		}
		return
	case rawType:
		d.json(path, want.Bytes(), got.Bytes())
		return
	case byteType:
		if !bytes.Equal(want.Bytes(), got.Bytes()) {
			d.add(path, "got %q, want %q", got.Bytes(), want.Bytes())
		}
		return
	}
	if strings.HasSuffix(path, ".Work.Options") {
		d.asJSON(path, want.Interface(), got.Interface())
		return
	}
	switch want.Kind() {
	case reflect.Pointer:
		if want.IsNil() || got.IsNil() {
			if want.IsNil() != got.IsNil() {
				d.add(path, "got %s, want %s", describe(got), describe(want))
			}
			return
		}
		d.walk(path, want.Elem(), got.Elem())
	case reflect.Interface:
		if want.IsNil() || got.IsNil() {
			if want.IsNil() != got.IsNil() {
				d.add(path, "got %#v, want %#v", got.Interface(), want.Interface())
			}
			return
		}
		d.walk(path, want.Elem(), got.Elem())
	case reflect.Struct:
		for i := range want.NumField() {
			f := want.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			d.walk(path+"."+f.Name, want.Field(i), got.Field(i))
		}
	case reflect.Slice:
		if want.Len() != got.Len() {
			d.add(path, "got %d elements %s, want %d %s", got.Len(), describe(got), want.Len(), describe(want))
			return
		}
		for i := range want.Len() {
			d.walk(fmt.Sprintf("%s[%d]", path, i), want.Index(i), got.Index(i))
		}
	case reflect.Map:
		for _, k := range want.MapKeys() {
			g := got.MapIndex(k)
			if !g.IsValid() {
				d.add(fmt.Sprintf("%s[%v]", path, k), "missing, want %#v", want.MapIndex(k).Interface())
				continue
			}
			d.walk(fmt.Sprintf("%s[%v]", path, k), want.MapIndex(k), g)
		}
		for _, k := range got.MapKeys() {
			if !want.MapIndex(k).IsValid() {
				d.add(fmt.Sprintf("%s[%v]", path, k), "got %#v, want no such key", got.MapIndex(k).Interface())
			}
		}
	default:
		if want.Interface() != got.Interface() {
			d.add(path, "got %#v, want %#v", got.Interface(), want.Interface())
		}
	}
}

func (d *differ) json(path string, want, got []byte) {
	if bytes.Equal(want, got) {
		return
	}
	if len(want) == 0 || len(got) == 0 || d.exactJSON {
		d.add(path, "got %s, want %s", showJSON(got), showJSON(want))
		return
	}
	var w, g any
	if err := json.Unmarshal(got, &g); err != nil {
		d.add(path, "got %s, which is not JSON (%v); want %s", got, err, want)
		return
	}
	if err := json.Unmarshal(want, &w); err != nil {
		d.add(path, "the suite wrote invalid JSON %s: %v", want, err)
		return
	}
	if !reflect.DeepEqual(w, g) {
		d.add(path, "got %s, want %s", got, want)
	}
}

// asJSON compares want and got by their JSON encodings, decoded.
func (d *differ) asJSON(path string, want, got any) {
	if reflect.ValueOf(want).Len() == 0 && reflect.ValueOf(got).Len() == 0 {
		return
	}
	w, err := json.Marshal(want)
	if err != nil {
		d.add(path, "the suite wrote a value JSON cannot encode: %v", err)
		return
	}
	g, err := json.Marshal(got)
	if err != nil {
		d.add(path, "got a value JSON cannot encode: %v", err)
		return
	}
	exact := d.exactJSON
	d.exactJSON = false
	d.json(path, w, g)
	d.exactJSON = exact
}

func showJSON(b []byte) string {
	if b == nil {
		return "nil"
	}
	return fmt.Sprintf("%q", b)
}

func describe(v reflect.Value) string {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return "nil"
		}
		return fmt.Sprintf("&%#v", v.Elem().Interface())
	}
	return fmt.Sprintf("%#v", v.Interface())
}

// deepCopy returns a copy of v that shares no pointer, slice or map with it,
// taken before v is written: the expected value must not change if a store
// changes what it is given (other than the ID InsertAttempt sets).
func deepCopy[T any](v T) T {
	return copyValue(reflect.ValueOf(&v).Elem()).Interface().(T)
}

func copyValue(v reflect.Value) reflect.Value {
	out := reflect.New(v.Type()).Elem()
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			p := reflect.New(v.Type().Elem())
			p.Elem().Set(copyValue(v.Elem()))
			out.Set(p)
		}
	case reflect.Interface:
		if !v.IsNil() {
			out.Set(copyValue(v.Elem()))
		}
	case reflect.Slice:
		if !v.IsNil() {
			s := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
			for i := range v.Len() {
				s.Index(i).Set(copyValue(v.Index(i)))
			}
			out.Set(s)
		}
	case reflect.Map:
		if !v.IsNil() {
			m := reflect.MakeMapWithSize(v.Type(), v.Len())
			for _, k := range v.MapKeys() {
				m.SetMapIndex(k, copyValue(v.MapIndex(k)))
			}
			out.Set(m)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if !v.Type().Field(i).IsExported() {
				// A value type such as time.Time: copying it is enough.
				out.Set(v)
				return out
			}
		}
		for i := range v.NumField() {
			out.Field(i).Set(copyValue(v.Field(i)))
		}
	default:
		out.Set(v)
	}
	return out
}
