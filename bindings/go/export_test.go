package toolpool

// Every test of this package decodes toolpool's JSON with DisallowUnknownFields.
func init() { strictJSON = true }
