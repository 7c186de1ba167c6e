// Package envoy holds the configuration that deploys keygate: envoy.yaml (the Envoy v3
// bootstrap used by the repository's docker-compose.yaml), the Istio example in istio/,
// and the tests that keep them honest.
//
// The package has no code of its own. Its tests parse every file with the loader of the
// system that will read it — go-control-plane's protos for Envoy (every typed_config
// resolved, protoc-gen-validate rules checked), the Compose specification's Go loader
// for docker-compose.yaml, Istio's API protos and Kubernetes' API types for istio/ — and
// then assert the security settings the SPEC requires, so a typo or a weakened setting
// fails `go test ./envoy/` instead of a deployment.
package envoy
