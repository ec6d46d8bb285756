//! `ToolpoolClient`: a connection to a `toolpool serve` service (wraps [`crate::Client`]).
//! Its pools are ordinary `ToolpoolPool` handles: every `toolpool_pool_*` function works
//! on them, and `toolpool_pool_free` frees them.

use super::pool::ToolpoolPool;
use super::{ffi_call, ffi_void, json_string, Handle};
use crate::Client;
use std::ffi::c_char;
use std::sync::Arc;

/// An opaque client handle, from `toolpool_client_connect`, freed with
/// `toolpool_client_free`. Every call but `toolpool_client_free` may be made from many
/// threads at once on the same handle; pools from it may outlive it.
pub struct ToolpoolClient {
    client: Client,
}

impl Handle for ToolpoolClient {
    type Inner = Client;
    const WHAT: &'static str = "client";
    fn inner(&self) -> &Client {
        &self.client
    }
}

/// Connect to the service listening on the Unix socket at `path` (one connection and the
/// hello exchange happen now). While this client lives, the process-wide limit calls
/// (`toolpool_limit_set`, `toolpool_limit_status_json`, `toolpool_kill_all`) go to its
/// service.
///
/// Errors: `TOOLPOOL_SERVICE` when nothing listens there, the peer is not a toolpool
/// service or speaks another protocol version, or it refuses this user (the message
/// says who may connect).
/// NULL handling: `path` or `out` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `path` is borrowed for the call. On success `*out` receives a new handle
/// that the caller owns and frees with `toolpool_client_free`.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `path` must be NULL or NUL-terminated; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_client_connect(
    path: *const c_char,
    out: *mut *mut ToolpoolClient,
) -> i32 {
    ffi_call("toolpool_client_connect", || {
        let path = try_str!(path);
        let out = try_out!(out);
        let client = Client::connect(path)?;
        out.write(Box::into_raw(Box::new(ToolpoolClient { client })));
        Ok(())
    })
}

/// The service's pool of tool `tool_id`, as a `ToolpoolPool` every `toolpool_pool_*`
/// function takes. `toolpool_pool_shutdown` and `toolpool_pool_free` on it end this handle
/// only; the service's pool runs on for its other clients.
///
/// Errors: `TOOLPOOL_NOT_FOUND` for a tool the service does not serve (the message lists
/// the ones it does); `TOOLPOOL_SERVICE` when the service cannot be reached.
/// NULL handling: `c`, `tool_id` or `out` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `tool_id` is borrowed. On success `*out` receives a new pool handle that the
/// caller owns and frees with `toolpool_pool_free` (before or after the client).
/// Thread safety: safe from many threads at once on the same client.
///
/// # Safety
/// `c` must be NULL or a live client; `tool_id` NULL or NUL-terminated; `out` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_client_pool(
    c: *mut ToolpoolClient,
    tool_id: *const c_char,
    out: *mut *mut ToolpoolPool,
) -> i32 {
    ffi_call("toolpool_client_pool", || {
        let c = c.cast_const();
        let client = try_handle!(c);
        let tool = try_str!(tool_id);
        let out = try_out!(out);
        let pool = client.pool(tool)?;
        out.write(Box::into_raw(Box::new(ToolpoolPool {
            pool: Arc::new(pool),
            lent: false,
        })));
        Ok(())
    })
}

/// The tool ids the service serves, as a JSON array of strings.
///
/// Errors: `TOOLPOOL_SERVICE` when the service cannot be reached.
/// NULL handling: `c` or `out_json` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: on success `*out_json` receives a new string that the caller frees with
/// `toolpool_string_free`.
/// Thread safety: safe from many threads at once on the same client.
///
/// # Safety
/// `c` must be NULL or a live client; `out_json` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_client_tools_json(
    c: *const ToolpoolClient,
    out_json: *mut *mut c_char,
) -> i32 {
    ffi_call("toolpool_client_tools_json", || {
        let client = try_handle!(c);
        let out = try_out!(out_json);
        out.write(json_string(&client.tools()?)?);
        Ok(())
    })
}

/// Free a client: its idle connections close. Pools taken from it keep working (each
/// holds the connections it needs) until they are freed.
///
/// NULL handling: NULL is ignored.
/// Ownership: takes back ownership of `c`; `c` must not be used afterwards.
/// Thread safety: must not race another call on the same client.
///
/// # Safety
/// `c` must be NULL or a client from `toolpool_client_connect` not yet freed, with no
/// call on it in progress.
#[no_mangle]
pub unsafe extern "C" fn toolpool_client_free(c: *mut ToolpoolClient) {
    ffi_void("toolpool_client_free", || {
        if !c.is_null() {
            // SAFETY: a client from toolpool_client_connect, freed once (the contract).
            drop(unsafe { Box::from_raw(c) });
        }
    })
}
