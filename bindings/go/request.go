package toolpool

// The request path in one cgo call. A blocking cgo call is what a Go program pays most for
// around a toolpool call: each extra transition, and a goroutine locked to its thread
// (runtime.LockOSThread, which the generic call() needs to read the thread-local error
// message), turns into OS thread hand-offs when the scheduler has taken the P away during
// the call. So the hot path makes exactly one: tp_request copies the payload into a
// NUL-terminated buffer (on the C stack when it is small), calls the C API, copies a reply
// that fits into the caller's Go buffer and frees it, and on failure copies the error
// message, all on the thread that made the call.

/*
#include <stdlib.h>
#include <string.h>
#include "toolpool.h"

typedef struct {
	size_t len;   // the reply's length
	char *reply;  // the reply when it did not fit into buf (free with toolpool_string_free)
	char *err;    // the error message on failure (free with free)
	uint32_t instance;
	bool moved;
} tp_result;

// sticky 0: a routed request; else a sticky one with key[0..key_len].
static int32_t tp_request(ToolpoolPool *p, int sticky, const char *key, size_t key_len,
                          const char *payload, size_t n, uint32_t ms, const ToolpoolCancel *c,
                          char *buf, size_t cap, tp_result *r) {
	char small_p[1024], small_k[256];
	char *s = n < sizeof small_p ? small_p : malloc(n + 1);
	char *k = !sticky ? NULL : (key_len < sizeof small_k ? small_k : malloc(key_len + 1));
	char *out = NULL;
	int32_t rc;
	if (s == NULL || (sticky && k == NULL)) {
		rc = TOOLPOOL_IO;
		r->err = strdup("out of memory for the payload");
		goto done;
	}
	if (n > 0) memcpy(s, payload, n);
	s[n] = 0;
	if (!sticky) {
		rc = toolpool_pool_request_cancellable(p, s, ms, c, &out);
	} else {
		if (key_len > 0) memcpy(k, key, key_len);
		k[key_len] = 0;
		rc = toolpool_pool_request_sticky_cancellable(p, k, s, ms, c, &out, &r->instance, &r->moved);
	}
	if (rc != TOOLPOOL_OK) {
		const char *m = toolpool_last_error_message();
		r->err = m != NULL ? strdup(m) : NULL;
		goto done;
	}
	r->len = strlen(out);
	if (r->len <= cap) {
		memcpy(buf, out, r->len);
		toolpool_string_free(out);
	} else {
		r->reply = out;
	}
done:
	if (s != NULL && s != small_p) free(s);
	if (k != NULL && k != small_k) free(k);
	return rc;
}
*/
import "C"

import (
	"strings"
	"sync"
	"unsafe"
)

// replyBufSize is the size of the pooled buffers that replies are copied into; a longer
// reply is copied from the library's own string instead.
const replyBufSize = 4096

var replyBufs = sync.Pool{New: func() any { return new([replyBufSize]byte) }}

// request is Request and RequestSticky (key != nil) on the live handle, with token c
// (nil: not cancellable): one cgo call, no lock, no locked thread.
func (p *Pool) request(op string, key *string, payload string, ms C.uint32_t, c *C.ToolpoolCancel) (Reply, error) {
	if strings.IndexByte(payload, 0) >= 0 {
		return Reply{}, newError(CodeInvalidArgument, op, "payload contains a NUL byte")
	}
	var ckey *C.char
	var keyLen C.size_t
	sticky := C.int(0)
	if key != nil {
		if strings.IndexByte(*key, 0) >= 0 {
			return Reply{}, newError(CodeInvalidArgument, op, "key contains a NUL byte")
		}
		ckey = (*C.char)(unsafe.Pointer(unsafe.StringData(*key)))
		keyLen = C.size_t(len(*key))
		sticky = 1
	}
	h, err := p.enter(op)
	if err != nil {
		return Reply{}, err
	}
	buf := replyBufs.Get().(*[replyBufSize]byte)
	var r C.tp_result
	r.instance = C.uint32_t(^uint32(0))
	// cgo lets C borrow Go memory that holds no Go pointers for the call: the payload's
	// bytes, the key's, the buffer, the result struct.
	rc := C.tp_request(h, sticky, ckey, keyLen, (*C.char)(unsafe.Pointer(unsafe.StringData(payload))),
		C.size_t(len(payload)), ms, c, (*C.char)(unsafe.Pointer(&buf[0])), replyBufSize, &r)
	p.leave()
	if rc != C.TOOLPOOL_OK {
		replyBufs.Put(buf)
		msg := ""
		if r.err != nil {
			msg = C.GoString(r.err)
			C.free(unsafe.Pointer(r.err))
		}
		return Reply{}, &Error{Code: Code(rc), Op: op, Message: msg}
	}
	var text string
	if r.reply != nil {
		text = C.GoStringN(r.reply, C.int(r.len))
		C.toolpool_string_free(r.reply)
	} else {
		text = string(buf[:r.len])
	}
	replyBufs.Put(buf)
	out := Reply{Text: text, Instance: int(r.instance), Moved: bool(r.moved)}
	if uint32(r.instance) == ^uint32(0) {
		out.Instance = -1
	}
	return out, nil
}
