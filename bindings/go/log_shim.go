package toolpool

// The C side of SetLogger: a shim with the exact ToolpoolLogCallback signature that
// forwards to the exported Go function (a file with //export may hold only declarations
// in its preamble, so the shim lives here).

/*
#include <stdint.h>
#include "toolpool.h"

extern void toolpoolGoLog(void *userdata, int32_t level, char *target, char *message);

static void toolpool_go_log_shim(void *userdata, int32_t level, const char *target,
                                 const char *message) {
    toolpoolGoLog(userdata, level, (char *)target, (char *)message);
}

static int32_t toolpool_go_set_log(int32_t max_level, int on) {
    return toolpool_set_log_callback(max_level, on ? toolpool_go_log_shim : NULL, NULL);
}
*/
import "C"

// setLogCallback installs (on) or removes the Go log callback in the C library.
func setLogCallback(maxLevel int32, on bool) error {
	onFlag := C.int(0)
	if on {
		onFlag = 1
	}
	return call("SetLogger", func() C.int32_t {
		return C.toolpool_go_set_log(C.int32_t(maxLevel), onFlag)
	})
}
