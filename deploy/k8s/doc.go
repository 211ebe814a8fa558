// Package k8s holds the Kubernetes manifests of OMS (kustomize: base/ and
// overlays/dev, overlays/prod) and the tests that check them offline:
//
//   - render_test.go renders every overlay in-process with kustomize and
//     checks probes, security contexts, resources, images, autoscaling,
//     IAM identities and the drain budget;
//   - images_test.go runs the build stage of each deploy/*/Dockerfile on
//     the host and checks the binaries are static and start up to their
//     config validation.
//
// The package has no code of its own.
package k8s
