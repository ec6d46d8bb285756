//! The C ABI (see include/toolpool.h).
