package operation

import "github.com/omsdev/oms/pkg/config"

// InsecureDevSecret stands in for OPERATION_SECRET in insecure dev mode
// only, where every caller is trusted anyway. Ingest and query both use
// it there, so the names ingest issues still verify in query.
const InsecureDevSecret = "insecure-dev-mode-operation-secret-not-for-production"

// LoadSecret reads OPERATION_SECRET, as ingest (which signs operation
// names) and query (which verifies them) both must: the two must agree, or
// no name ingest issues can be looked up.
func LoadSecret(env *config.Env, insecureDevMode bool) []byte {
	secret := env.Secret("OPERATION_SECRET", 32)
	switch {
	case secret == "" && insecureDevMode:
		secret = InsecureDevSecret
	case secret == "":
		env.Errorf("OPERATION_SECRET is required: a random value of at least 32 characters, the same on every ingest and query replica (for example `openssl rand -hex 32`)")
	}
	return []byte(secret)
}
