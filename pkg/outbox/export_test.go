package outbox

// ClaimQuery is the statement a relay claims a batch with, for the tests
// that measure it.
const ClaimQuery = claimQuery
