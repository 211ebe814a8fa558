package k8s

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// The services every rendering must run, by Deployment name.
var services = map[string]struct {
	container, image string
	autoscaler       string // kind of the autoscaler that owns the replica count
	// public: serves the API (pkg/serve) on http and grpc, with health and
	// metrics on a separate plaintext admin port.
	public bool
	// secrets: settings that must come from a Secret.
	secrets []string
}{
	"oms-ingest":    {"ingest", "ghcr.io/omsdev/oms-ingest", "HorizontalPodAutoscaler", true, []string{"ORDER_ID_SECRET", "OPERATION_SECRET"}},
	"oms-processor": {"processor", "ghcr.io/omsdev/oms-processor", "ScaledObject", false, []string{"DATABASE_URL"}},
	"oms-query":     {"query", "ghcr.io/omsdev/oms-query", "HorizontalPodAutoscaler", true, []string{"DATABASE_URL", "OPERATION_SECRET"}},
}

// The Secrets an overlay without Secrets must have created out of band:
// env name -> Secret name (the key is the env name).
var outOfBandSecrets = map[string]string{
	"DATABASE_URL":     "oms-db",
	"ORDER_ID_SECRET":  "oms-order-id-secret",
	"OPERATION_SECRET": "oms-operation-secret",
}

const (
	omsImagePrefix  = "ghcr.io/omsdev/oms-"
	placeholderARN  = "arn:aws:iam::000000000000:"
	migrationJob    = "oms-migrate"
	processorDeploy = "oms-processor"
)

var roleARN = regexp.MustCompile(`^arn:aws:iam::\d{12}:role/[\w+=,.@/-]+$`)

var overlays = []struct {
	dir string
	// deployable: an overlay, not the base, so every setting a pod needs
	// to start must be there.
	deployable bool
	// prod: images pinned to a non-latest tag, real role ARNs, no Secret
	// in the rendering (oms-db is created out of band), TLS on the public
	// ports, no insecure development switches.
	prod bool
	// images allowed besides ghcr.io/omsdev/oms-*, by repository.
	thirdParty []string
	// settings the rendered oms-config must have.
	config map[string]string
}{
	{dir: "base"},
	{
		dir:        "overlays/dev",
		deployable: true,
		thirdParty: []string{"postgres"},
		config: map[string]string{
			"LOG_LEVEL": "debug", "SQS_ENDPOINT": "http://oms-sqslocal:4100",
			"SQS_CREATE_QUEUES": "true", "PROCESSOR_SUBSCRIPTIONS": "8",
		},
	},
	{
		dir:        "overlays/prod",
		deployable: true,
		prod:       true,
		config: map[string]string{
			"SQS_ENDPOINT": "", "SQS_CREATE_QUEUES": "false", "PROCESSOR_SUBSCRIPTIONS": "8",
			"LOG_LEVEL": "info",
		},
	},
}

func TestRender(t *testing.T) {
	for _, ov := range overlays {
		t.Run(ov.dir, func(t *testing.T) {
			t.Parallel()
			r := render(t, ov.dir)
			cfg := r.config(t)

			for key, want := range ov.config {
				if got := cfg.data[key]; got != want {
					r.errorf(t, cfg.obj, "%s = %q, want %q", key, got, want)
				}
			}
			checkConfig(t, r, cfg)
			checkServices(t, r, cfg)
			checkWorkloads(t, r, ov.thirdParty)
			checkMigration(t, r)
			checkAutoscaling(t, r, cfg)
			checkIdentities(t, r, ov.prod)
			checkRouting(t, r)
			if ov.deployable {
				checkTransport(t, r, cfg)
			}
			if ov.prod {
				checkProd(t, r, cfg)
			}
		})
	}
}

// checkConfig: secrets and AWS keys never travel in the ConfigMap.
func checkConfig(t *testing.T, r *rendering, cfg configMap) {
	for _, key := range []string{"DATABASE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} {
		if _, ok := cfg.data[key]; ok {
			r.errorf(t, cfg.obj, "holds %s: secrets belong in a Secret, AWS keys nowhere", key)
		}
	}
	if _, err := drainTimeout(cfg); err != nil {
		r.errorf(t, cfg.obj, "%v", err)
	}
}

func drainTimeout(cfg configMap) (time.Duration, error) {
	v, ok := cfg.data["DRAIN_TIMEOUT"]
	if !ok {
		return 20 * time.Second, nil // the services' default
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("DRAIN_TIMEOUT=%q: %v", v, err)
	}
	return d, nil
}

// checkServices: the three Deployments exist, probe the right endpoints,
// read oms-config, run the right image and outlive their drain.
func checkServices(t *testing.T, r *rendering, cfg configMap) {
	drain, _ := drainTimeout(cfg)
	for name, want := range services {
		obj, ok := r.get("Deployment", name)
		if !ok {
			t.Errorf("%s: Deployment %s: missing", r.dir, name)
			continue
		}
		var d workload
		r.decode(t, obj, &d)
		pod := d.Spec.Template.Spec
		c := pod.container(want.container)
		if c == nil {
			r.errorf(t, obj, "no container %q", want.container)
			continue
		}
		if repo, _ := splitImage(c.Image); repo != want.image {
			r.errorf(t, obj, "container %s runs %s, want image %s", c.Name, c.Image, want.image)
		}
		checkProbe(t, r, obj, c, "livenessProbe", c.LivenessProbe, "/healthz")
		checkProbe(t, r, obj, c, "readinessProbe", c.ReadinessProbe, "/readyz")
		if c.StartupProbe != nil {
			checkProbe(t, r, obj, c, "startupProbe", c.StartupProbe, "/healthz")
		}
		if !slices.ContainsFunc(c.EnvFrom, func(e envFrom) bool {
			return e.ConfigMapRef != nil && e.ConfigMapRef.Name == cfg.obj.Metadata.Name
		}) {
			r.errorf(t, obj, "container %s does not read the rendered ConfigMap %s", c.Name, cfg.obj.Metadata.Name)
		}
		// The kubelet kills the pod terminationGracePeriodSeconds after the
		// preStop hook starts; the drain must fit after the hook.
		var budget time.Duration
		if pod.TerminationGracePeriodSeconds != nil {
			budget = time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
		} else {
			budget = 30 * time.Second // Kubernetes' default
		}
		var preStop time.Duration
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
			preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		}
		if budget <= drain+preStop {
			r.errorf(t, obj, "terminationGracePeriodSeconds %s must exceed DRAIN_TIMEOUT %s + preStop %s", budget, drain, preStop)
		}
		checkScrape(t, r, obj, d, c, want.public)
		for _, name := range want.secrets {
			if e := c.env(name); e == nil || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
				r.errorf(t, obj, "container %s: %s must come from a Secret", c.Name, name)
			}
		}
	}
}

// checkScrape: Prometheus scrapes a declared port; for the public services
// it is the plaintext admin port, where ADMIN_ADDR listens, never the API
// ports (pkg/serve serves /metrics on the admin port only).
func checkScrape(t *testing.T, r *rendering, obj object, d workload, c *container, public bool) {
	ann := d.Spec.Template.Metadata.Annotations
	if ann["prometheus.io/scrape"] != "true" {
		r.errorf(t, obj, "pod template lacks prometheus.io/scrape: \"true\"")
		return
	}
	n, err := strconv.Atoi(ann["prometheus.io/port"])
	scraped := slices.IndexFunc(c.Ports, func(p port) bool { return err == nil && p.ContainerPort == n })
	if scraped < 0 {
		r.errorf(t, obj, "prometheus.io/port %q is not a port container %s declares", ann["prometheus.io/port"], c.Name)
		return
	}
	if !public {
		return
	}
	if name := c.Ports[scraped].Name; name != "admin" {
		r.errorf(t, obj, "Prometheus scrapes port %s (%d): metrics are on the admin port only", name, n)
	}
	admin := c.env("ADMIN_ADDR")
	if _, p, err := net.SplitHostPort(envValue(admin)); err != nil || p != strconv.Itoa(n) {
		r.errorf(t, obj, "container %s: ADMIN_ADDR %q does not listen on the scraped port %d", c.Name, envValue(admin), n)
	}
}

// checkTransport: a deployable rendering starts the public services: they
// listen on every interface, which pkg/serve allows only with TLS or with
// ALLOW_PLAINTEXT (a mesh, or a throwaway dev cluster). Probes must reach
// a port they can speak to: the admin port, or HTTPS on a TLS port.
func checkTransport(t *testing.T, r *rendering, cfg configMap) {
	for name, want := range services {
		obj, ok := r.get("Deployment", name)
		if !ok || !want.public {
			continue
		}
		var d workload
		r.decode(t, obj, &d)
		c := d.Spec.Template.Spec.container(want.container)
		if c == nil {
			continue
		}
		tls := envValue(c.env("TLS_CERT_FILE")) != "" && envValue(c.env("TLS_KEY_FILE")) != ""
		plaintext := strings.EqualFold(cfg.data["ALLOW_PLAINTEXT"], "true") || strings.EqualFold(envValue(c.env("ALLOW_PLAINTEXT")), "true")
		beyond := !onLoopback(envValue(c.env("HTTP_ADDR"))) || !onLoopback(envValue(c.env("GRPC_ADDR")))
		if beyond && !tls && !plaintext {
			r.errorf(t, obj, "container %s listens beyond loopback without TLS_CERT_FILE/TLS_KEY_FILE or ALLOW_PLAINTEXT: it would refuse to start", c.Name)
		}
		for field, p := range map[string]*probe{"livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe, "startupProbe": c.StartupProbe} {
			if p == nil || p.HTTPGet == nil {
				continue
			}
			if tls && p.HTTPGet.Port != "admin" && p.HTTPGet.Scheme != "HTTPS" {
				r.errorf(t, obj, "container %s: %s probes port %v over plain HTTP, which serves TLS: probe the admin port", c.Name, field, p.HTTPGet.Port)
			}
		}
	}
}

func checkProbe(t *testing.T, r *rendering, obj object, c *container, field string, p *probe, path string) {
	switch {
	case p == nil:
		r.errorf(t, obj, "container %s has no %s", c.Name, field)
	case p.HTTPGet == nil:
		r.errorf(t, obj, "container %s: %s is not an httpGet on %s", c.Name, field, path)
	case p.HTTPGet.Path != path:
		r.errorf(t, obj, "container %s: %s probes %q, want %q", c.Name, field, p.HTTPGet.Path, path)
	case !c.hasPort(p.HTTPGet.Port):
		r.errorf(t, obj, "container %s: %s probes port %v, which the container does not declare", c.Name, field, p.HTTPGet.Port)
	}
}

// checkWorkloads: every container of every workload is locked down, sized,
// free of AWS keys, and runs an image this project builds.
func checkWorkloads(t *testing.T, r *rendering, thirdParty []string) {
	for _, obj := range r.workloads() {
		var w workload
		r.decode(t, obj, &w)
		pod := w.Spec.Template.Spec
		if len(pod.Containers) == 0 {
			r.errorf(t, obj, "no containers")
		}
		for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
			repo, _ := splitImage(c.Image)
			ours := strings.HasPrefix(repo, omsImagePrefix)
			if !ours && !slices.Contains(thirdParty, repo) {
				r.errorf(t, obj, "container %s runs %s: images come from %s*", c.Name, c.Image, omsImagePrefix)
			}
			checkSecurity(t, r, obj, pod, c, ours)
			for _, res := range []string{"cpu", "memory"} {
				if c.Resources.Requests[res] == "" {
					r.errorf(t, obj, "container %s has no %s request", c.Name, res)
				}
				if c.Resources.Limits[res] == "" {
					r.errorf(t, obj, "container %s has no %s limit", c.Name, res)
				}
			}
			for _, e := range c.Env {
				if strings.HasPrefix(e.Name, "AWS_ACCESS_KEY") || strings.HasPrefix(e.Name, "AWS_SECRET") || e.Name == "AWS_SESSION_TOKEN" {
					r.errorf(t, obj, "container %s sets %s: use IRSA / Pod Identity, never static keys", c.Name, e.Name)
				}
				if _, secret := outOfBandSecrets[e.Name]; secret && (e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
					r.errorf(t, obj, "container %s: %s must come from a Secret", c.Name, e.Name)
				}
			}
		}
	}
}

func checkSecurity(t *testing.T, r *rendering, obj object, pod podSpec, c container, ours bool) {
	sc := c.SecurityContext
	if sc == nil {
		r.errorf(t, obj, "container %s has no securityContext", c.Name)
		return
	}
	pc := pod.SecurityContext
	if pc == nil {
		pc = &securityContext{}
	}
	if !isTrue(sc.RunAsNonRoot) {
		r.errorf(t, obj, "container %s: runAsNonRoot is not true", c.Name)
	}
	uid := sc.RunAsUser
	if uid == nil {
		uid = pc.RunAsUser
	}
	switch {
	case uid == nil || *uid == 0:
		r.errorf(t, obj, "container %s: runAsUser must be set and non-zero", c.Name)
	case ours && *uid != 65532:
		r.errorf(t, obj, "container %s: runAsUser %d, want 65532 (distroless nonroot)", c.Name, *uid)
	}
	if !isTrue(sc.ReadOnlyRootFilesystem) {
		r.errorf(t, obj, "container %s: readOnlyRootFilesystem is not true", c.Name)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		r.errorf(t, obj, "container %s: allowPrivilegeEscalation is not false", c.Name)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		r.errorf(t, obj, "container %s: capabilities must drop ALL and add none", c.Name)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil {
		seccomp = pc.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != "RuntimeDefault" {
		r.errorf(t, obj, "container %s: seccompProfile is not RuntimeDefault", c.Name)
	}
}

// checkMigration: the Job runs "migrate up" from the processor's exact
// image, before the rollout, and cleans up after itself.
func checkMigration(t *testing.T, r *rendering) {
	obj, ok := r.get("Job", migrationJob)
	if !ok {
		t.Errorf("%s: Job %s: missing", r.dir, migrationJob)
		return
	}
	var job workload
	r.decode(t, obj, &job)
	if len(job.Spec.Template.Spec.Containers) != 1 {
		r.errorf(t, obj, "want one container, have %d", len(job.Spec.Template.Spec.Containers))
		return
	}
	c := job.Spec.Template.Spec.Containers[0]
	if !slices.Equal(c.Args, []string{"migrate", "up"}) {
		r.errorf(t, obj, "args %q, want [migrate up]", c.Args)
	}
	if p, ok := r.get("Deployment", processorDeploy); ok {
		var d workload
		r.decode(t, p, &d)
		if pc := d.Spec.Template.Spec.container(services[processorDeploy].container); pc != nil && pc.Image != c.Image {
			r.errorf(t, obj, "runs %s but Deployment %s runs %s: migrate with the release's own image", c.Image, processorDeploy, pc.Image)
		}
	}
	if got := obj.Metadata.Annotations["argocd.argoproj.io/hook"]; got != "PreSync" {
		r.errorf(t, obj, "argocd.argoproj.io/hook = %q, want PreSync", got)
	}
	if job.Spec.TTLSecondsAfterFinished == nil {
		r.errorf(t, obj, "no ttlSecondsAfterFinished: the next release could not apply a new Job")
	}
}

// checkAutoscaling: against real SQS the processor scales on the command
// queue's depth and ingest and query on CPU, and no Deployment pins a
// replica count an autoscaler owns; against the emulator (goaws keeps FIFO
// order only with one consumer) there is exactly one processor with one
// subscription.
func checkAutoscaling(t *testing.T, r *rendering, cfg configMap) {
	if cfg.data["SQS_ENDPOINT"] != "" {
		for _, kind := range []string{"ScaledObject", "HorizontalPodAutoscaler"} {
			for _, obj := range r.byKind(kind) {
				r.errorf(t, obj, "autoscaling against the SQS emulator: goaws needs a single consumer")
			}
		}
		if obj, ok := r.get("Deployment", processorDeploy); ok {
			var d workload
			r.decode(t, obj, &d)
			if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
				r.errorf(t, obj, "replicas must be 1 against the SQS emulator")
			}
		}
		if got := cfg.data["PROCESSOR_SUBSCRIPTIONS"]; got != "8" {
			r.errorf(t, cfg.obj, "PROCESSOR_SUBSCRIPTIONS = %q: sqslocal keeps FIFO group locks, so run as production (8)", got)
		}
		return
	}

	for name, svc := range services {
		if obj, ok := r.get("Deployment", name); ok {
			var d workload
			r.decode(t, obj, &d)
			if d.Spec.Replicas != nil {
				r.errorf(t, obj, "sets replicas: %d, but its %s owns the count (every apply would reset it)", *d.Spec.Replicas, svc.autoscaler)
			}
		}
	}

	scaled := map[string]bool{}
	for _, obj := range r.byKind("HorizontalPodAutoscaler") {
		var h hpa
		r.decode(t, obj, &h)
		ref := h.Spec.ScaleTargetRef
		if ref.Kind != "Deployment" || services[ref.Name].autoscaler != "HorizontalPodAutoscaler" {
			r.errorf(t, obj, "targets %s %s, want the ingest or query Deployment", ref.Kind, ref.Name)
			continue
		}
		scaled[ref.Name] = true
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 1 || h.Spec.MaxReplicas < *h.Spec.MinReplicas {
			r.errorf(t, obj, "replica bounds min %v max %d", h.Spec.MinReplicas, h.Spec.MaxReplicas)
		}
		if !slices.ContainsFunc(h.Spec.Metrics, func(m hpaMetric) bool {
			return m.Type == "Resource" && m.Resource != nil && m.Resource.Name == "cpu"
		}) {
			r.errorf(t, obj, "does not scale on CPU")
		}
	}
	for _, name := range []string{"oms-ingest", "oms-query"} {
		if !scaled[name] {
			t.Errorf("%s: HorizontalPodAutoscaler for %s: missing", r.dir, name)
		}
	}

	objs := r.byKind("ScaledObject")
	if len(objs) != 1 {
		t.Errorf("%s: ScaledObject: want exactly one (the processor's), have %d", r.dir, len(objs))
		return
	}
	obj := objs[0]
	var so scaledObject
	r.decode(t, obj, &so)
	ref := so.Spec.ScaleTargetRef
	if ref.Name != processorDeploy || (ref.Kind != "" && ref.Kind != "Deployment") {
		r.errorf(t, obj, "targets %s %s, want Deployment %s", ref.Kind, ref.Name, processorDeploy)
	}
	if so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount < 1 {
		r.errorf(t, obj, "minReplicaCount must be at least 1: the processor also relays the outbox")
	} else if so.Spec.MaxReplicaCount == nil || *so.Spec.MaxReplicaCount < *so.Spec.MinReplicaCount {
		r.errorf(t, obj, "maxReplicaCount %v below minReplicaCount %d", so.Spec.MaxReplicaCount, *so.Spec.MinReplicaCount)
	}
	if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "aws-sqs-queue" {
		r.errorf(t, obj, "want one aws-sqs-queue trigger, have %+v", so.Spec.Triggers)
		return
	}
	trig := so.Spec.Triggers[0]
	queue, region := cfg.data["SQS_COMMAND_QUEUE"], cfg.data["AWS_REGION"]
	u, err := url.Parse(trig.Metadata["queueURL"])
	switch {
	case queue == "":
		r.errorf(t, cfg.obj, "no SQS_COMMAND_QUEUE")
	case err != nil || u.Scheme != "https" || !strings.HasSuffix(u.Path, "/"+queue):
		r.errorf(t, obj, "queueURL %q must be the https URL of SQS_COMMAND_QUEUE %q", trig.Metadata["queueURL"], queue)
	case u.Host != "sqs."+region+".amazonaws.com":
		r.errorf(t, obj, "queueURL host %s is not in AWS_REGION %s", u.Host, region)
	}
	if trig.Metadata["awsRegion"] != region {
		r.errorf(t, obj, "awsRegion %q, want AWS_REGION %q", trig.Metadata["awsRegion"], region)
	}
	if n, err := strconv.Atoi(trig.Metadata["queueLength"]); err != nil || n < 1 {
		r.errorf(t, obj, "queueLength %q is not a positive integer", trig.Metadata["queueLength"])
	}
	if trig.AuthenticationRef == nil {
		r.errorf(t, obj, "no authenticationRef")
		return
	}
	ta, ok := r.get("TriggerAuthentication", trig.AuthenticationRef.Name)
	if !ok {
		r.errorf(t, obj, "authenticationRef %s: no such TriggerAuthentication", trig.AuthenticationRef.Name)
		return
	}
	var auth triggerAuth
	r.decode(t, ta, &auth)
	if auth.Spec.PodIdentity == nil || auth.Spec.PodIdentity.Provider != "aws" {
		r.errorf(t, ta, "want podIdentity provider aws (IRSA / EKS Pod Identity), no static keys")
	}
	if len(auth.Spec.SecretTargetRef) > 0 || len(auth.Spec.Env) > 0 {
		r.errorf(t, ta, "reads credentials from Secrets or env: use podIdentity only")
	}
}

// checkIdentities: every ServiceAccount carries an IAM role, every service
// runs under its own, and prod names real roles.
func checkIdentities(t *testing.T, r *rendering, prod bool) {
	accounts := map[string]bool{}
	for _, obj := range r.byKind("ServiceAccount") {
		accounts[obj.Metadata.Name] = true
		arn := obj.Metadata.Annotations["eks.amazonaws.com/role-arn"]
		switch {
		case arn == "":
			r.errorf(t, obj, "no eks.amazonaws.com/role-arn annotation")
		case !roleARN.MatchString(arn):
			r.errorf(t, obj, "role-arn %q is not an IAM role ARN", arn)
		case prod && strings.HasPrefix(arn, placeholderARN):
			r.errorf(t, obj, "role-arn %q is the base placeholder: patch in the real role", arn)
		}
	}
	for name := range services {
		obj, ok := r.get("Deployment", name)
		if !ok {
			continue
		}
		var d workload
		r.decode(t, obj, &d)
		if sa := d.Spec.Template.Spec.ServiceAccountName; !accounts[sa] {
			r.errorf(t, obj, "serviceAccountName %q is not a rendered ServiceAccount", sa)
		}
	}
}

// checkRouting: Services select pods that exist, on ports they declare,
// and Secret references resolve where the rendering carries Secrets.
func checkRouting(t *testing.T, r *rendering) {
	type podOf struct {
		labels map[string]string
		spec   podSpec
	}
	var pods []podOf
	for _, obj := range r.byKind("Deployment") {
		var d workload
		r.decode(t, obj, &d)
		pods = append(pods, podOf{d.Spec.Template.Metadata.Labels, d.Spec.Template.Spec})
	}
	for _, obj := range r.byKind("Service") {
		var s service
		r.decode(t, obj, &s)
		var match *podOf
		for i := range pods {
			if len(s.Spec.Selector) > 0 && selects(s.Spec.Selector, pods[i].labels) {
				match = &pods[i]
			}
		}
		if match == nil {
			r.errorf(t, obj, "selector %v matches no Deployment's pods", s.Spec.Selector)
			continue
		}
		for _, p := range s.Spec.Ports {
			target := p.TargetPort
			if target == nil {
				target = p.Port
			}
			if !slices.ContainsFunc(match.spec.Containers, func(c container) bool { return c.hasPort(target) }) {
				r.errorf(t, obj, "port %s targets %v, which its pods do not declare", p.Name, target)
			}
		}
	}

	secrets := map[string]map[string]string{}
	for _, obj := range r.byKind("Secret") {
		var s secret
		r.decode(t, obj, &s)
		secrets[obj.Metadata.Name] = s.Data
	}
	for _, obj := range r.workloads() {
		var w workload
		r.decode(t, obj, &w)
		for _, c := range w.Spec.Template.Spec.Containers {
			for _, e := range c.Env {
				if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
					continue
				}
				ref := e.ValueFrom.SecretKeyRef
				if len(secrets) == 0 {
					// Created out of band: the documented name and key.
					if want, ok := outOfBandSecrets[e.Name]; ok && (ref.Name != want || ref.Key != e.Name) {
						r.errorf(t, obj, "%s from %s/%s, want %s/%s", e.Name, ref.Name, ref.Key, want, e.Name)
					}
					continue
				}
				if data, ok := secrets[ref.Name]; !ok {
					r.errorf(t, obj, "%s from Secret %s, which is not rendered", e.Name, ref.Name)
				} else if _, ok := data[ref.Key]; !ok {
					r.errorf(t, obj, "%s from Secret %s has no key %s", e.Name, ref.Name, ref.Key)
				}
			}
		}
	}
}

// onLoopback: an unset address takes the services' loopback default.
func onLoopback(addr string) bool {
	if addr == "" {
		return true
	}
	host, _, err := net.SplitHostPort(addr)
	ip := net.ParseIP(host)
	return err == nil && (host == "localhost" || (ip != nil && ip.IsLoopback()))
}

// checkProd: releases are reproducible and carry no credentials; the
// public ports serve TLS from cert-manager; tokens are verified against a
// real identity provider.
func checkProd(t *testing.T, r *rendering, cfg configMap) {
	for _, key := range []string{"AUTH_INSECURE_DEV_MODE", "ALLOW_PLAINTEXT"} {
		if _, ok := cfg.data[key]; ok {
			r.errorf(t, cfg.obj, "sets %s in prod", key)
		}
	}
	for _, key := range []string{"AUTH_ISSUER", "AUTH_AUDIENCE", "AUTH_JWKS_URL"} {
		v := cfg.data[key]
		u, err := url.Parse(v)
		switch {
		case v == "":
			r.errorf(t, cfg.obj, "%s is empty: set it to your identity provider's", key)
		case key != "AUTH_AUDIENCE" && (err != nil || u.Scheme != "https" || u.Host == ""):
			r.errorf(t, cfg.obj, "%s = %q: want an https URL", key, v)
		}
	}
	certs := map[string]certificate{} // by Secret name
	for _, obj := range r.byKind("Certificate") {
		var c certificate
		r.decode(t, obj, &c)
		certs[c.Spec.SecretName] = c
		if c.Spec.IssuerRef.Name == "" {
			r.errorf(t, obj, "no issuerRef")
		}
	}
	for _, obj := range r.workloads() {
		var w workload
		r.decode(t, obj, &w)
		for _, c := range w.Spec.Template.Spec.Containers {
			for _, key := range []string{"AUTH_INSECURE_DEV_MODE", "ALLOW_PLAINTEXT"} {
				if c.env(key) != nil {
					r.errorf(t, obj, "container %s sets %s in prod", c.Name, key)
				}
			}
		}
	}
	for name, want := range services {
		obj, ok := r.get("Deployment", name)
		if !ok || !want.public {
			continue
		}
		var d workload
		r.decode(t, obj, &d)
		c := d.Spec.Template.Spec.container(want.container)
		if c == nil {
			continue
		}
		if auth := envValue(c.env("GRPC_CLIENT_AUTH")); auth != "request" && auth != "require" {
			r.errorf(t, obj, "container %s: GRPC_CLIENT_AUTH %q: want request or require (service clients present certificates)", c.Name, auth)
		}
		for _, key := range []string{"TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE"} {
			file := envValue(c.env(key))
			m := c.mountOf(file)
			switch {
			case file == "":
				r.errorf(t, obj, "container %s: no %s: the public ports must serve TLS", c.Name, key)
			case m == nil:
				r.errorf(t, obj, "container %s: %s %s is on no volume mount", c.Name, key, file)
			case m.SubPath != "":
				r.errorf(t, obj, "container %s: %s is mounted with subPath: renewed certificates would never reach the pod", c.Name, key)
			default:
				v := d.Spec.Template.Spec.volume(m.Name)
				if v == nil || v.Secret == nil {
					r.errorf(t, obj, "container %s: %s is not on a Secret volume", c.Name, key)
					continue
				}
				cert, ok := certs[v.Secret.SecretName]
				if !ok {
					r.errorf(t, obj, "container %s: %s from Secret %s, which no cert-manager Certificate issues", c.Name, key, v.Secret.SecretName)
				} else if !slices.Contains(cert.Spec.DNSNames, name) {
					r.errorf(t, obj, "the Certificate for Secret %s does not name the Service %s", v.Secret.SecretName, name)
				}
			}
		}
	}

	for _, obj := range r.workloads() {
		var w workload
		r.decode(t, obj, &w)
		for _, c := range append(slices.Clone(w.Spec.Template.Spec.InitContainers), w.Spec.Template.Spec.Containers...) {
			if _, tag := splitImage(c.Image); tag == "" || tag == "latest" {
				r.errorf(t, obj, "container %s runs %s: pin a release tag", c.Name, c.Image)
			}
		}
	}
	for _, obj := range r.byKind("Secret") {
		r.errorf(t, obj, "a Secret in the prod rendering: create oms-db out of band")
	}
}

// splitImage splits "repo:tag" or "repo@digest"; a digest counts as pinned.
func splitImage(image string) (repo, tag string) {
	if i := strings.Index(image, "@"); i >= 0 {
		return image[:i], image[i+1:]
	}
	slash := strings.LastIndex(image, "/")
	if i := strings.LastIndex(image, ":"); i > slash {
		return image[:i], image[i+1:]
	}
	return image, ""
}

func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func isTrue(b *bool) bool { return b != nil && *b }

// rendering is one kustomize build.
type rendering struct {
	dir  string
	objs []object
}

type object struct {
	Kind     string `json:"kind"`
	Metadata meta   `json:"metadata"`
	raw      []byte
}

type meta struct {
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// kustomizeMu serialises renders: kustomize initialises its OpenAPI schema
// lazily in package globals, without a lock (a race with parallel tests).
var kustomizeMu sync.Mutex

// render runs kustomize in-process on dir, offline.
func render(t *testing.T, dir string) *rendering {
	t.Helper()
	opts := krusty.MakeDefaultOptions()
	opts.Reorder = krusty.ReorderOptionUnspecified // as the kustomize CLI: sortOptions, else legacy order
	k := krusty.MakeKustomizer(opts)
	kustomizeMu.Lock()
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	kustomizeMu.Unlock()
	if err != nil {
		t.Fatalf("%s: kustomize build: %v", dir, err)
	}
	r := &rendering{dir: dir}
	for _, res := range m.Resources() {
		raw, err := res.MarshalJSON()
		if err != nil {
			t.Fatalf("%s: %s %s: %v", dir, res.GetKind(), res.GetName(), err)
		}
		o := object{raw: raw}
		if err := json.Unmarshal(raw, &o); err != nil {
			t.Fatalf("%s: %s %s: %v", dir, res.GetKind(), res.GetName(), err)
		}
		r.objs = append(r.objs, o)
	}
	return r
}

func (r *rendering) errorf(t *testing.T, obj object, format string, args ...any) {
	t.Helper()
	t.Errorf("%s: %s %s: %s", r.dir, obj.Kind, obj.Metadata.Name, fmt.Sprintf(format, args...))
}

func (r *rendering) decode(t *testing.T, obj object, v any) {
	t.Helper()
	if err := json.Unmarshal(obj.raw, v); err != nil {
		r.errorf(t, obj, "decode: %v", err)
	}
}

func (r *rendering) byKind(kind string) []object {
	var out []object
	for _, o := range r.objs {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

func (r *rendering) get(kind, name string) (object, bool) {
	for _, o := range r.objs {
		if o.Kind == kind && o.Metadata.Name == name {
			return o, true
		}
	}
	return object{}, false
}

func (r *rendering) workloads() []object {
	var out []object
	for _, kind := range []string{"Deployment", "StatefulSet", "DaemonSet", "Job"} {
		out = append(out, r.byKind(kind)...)
	}
	return out
}

type configMap struct {
	obj  object
	data map[string]string
}

// config is the rendered oms-config (its name carries kustomize's hash).
func (r *rendering) config(t *testing.T) configMap {
	t.Helper()
	var found []object
	for _, o := range r.byKind("ConfigMap") {
		if o.Metadata.Name == "oms-config" || strings.HasPrefix(o.Metadata.Name, "oms-config-") {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s: ConfigMap oms-config: want exactly one, have %d", r.dir, len(found))
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := json.Unmarshal(found[0].raw, &cm); err != nil {
		t.Fatalf("%s: ConfigMap %s: %v", r.dir, found[0].Metadata.Name, err)
	}
	return configMap{obj: found[0], data: cm.Data}
}

// The few fields of the Kubernetes and KEDA types the checks read.

type workload struct {
	Spec struct {
		Replicas                *int32 `json:"replicas"`
		TTLSecondsAfterFinished *int32 `json:"ttlSecondsAfterFinished"`
		Template                struct {
			Metadata meta    `json:"metadata"`
			Spec     podSpec `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

type podSpec struct {
	ServiceAccountName            string           `json:"serviceAccountName"`
	TerminationGracePeriodSeconds *int64           `json:"terminationGracePeriodSeconds"`
	SecurityContext               *securityContext `json:"securityContext"`
	InitContainers                []container      `json:"initContainers"`
	Containers                    []container      `json:"containers"`
	Volumes                       []volume         `json:"volumes"`
}

type volume struct {
	Name   string `json:"name"`
	Secret *struct {
		SecretName string `json:"secretName"`
	} `json:"secret"`
}

func (p podSpec) volume(name string) *volume {
	for i := range p.Volumes {
		if p.Volumes[i].Name == name {
			return &p.Volumes[i]
		}
	}
	return nil
}

func (p podSpec) container(name string) *container {
	for i := range p.Containers {
		if p.Containers[i].Name == name {
			return &p.Containers[i]
		}
	}
	return nil
}

type container struct {
	Name    string    `json:"name"`
	Image   string    `json:"image"`
	Args    []string  `json:"args"`
	Ports   []port    `json:"ports"`
	Env     []envVar  `json:"env"`
	EnvFrom []envFrom `json:"envFrom"`

	VolumeMounts []volumeMount `json:"volumeMounts"`

	LivenessProbe  *probe `json:"livenessProbe"`
	ReadinessProbe *probe `json:"readinessProbe"`
	StartupProbe   *probe `json:"startupProbe"`

	Resources struct {
		Requests map[string]string `json:"requests"`
		Limits   map[string]string `json:"limits"`
	} `json:"resources"`
	SecurityContext *securityContext `json:"securityContext"`
	Lifecycle       *struct {
		PreStop *struct {
			Sleep *struct {
				Seconds int64 `json:"seconds"`
			} `json:"sleep"`
		} `json:"preStop"`
	} `json:"lifecycle"`
}

// hasPort reports whether p (a port name or number) is one c declares.
func (c container) hasPort(p any) bool {
	for _, cp := range c.Ports {
		switch v := p.(type) {
		case string:
			if cp.Name == v {
				return true
			}
		case float64:
			if float64(cp.ContainerPort) == v {
				return true
			}
		}
	}
	return false
}

// env is the container's variable name, or nil.
func (c container) env(name string) *envVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// envValue is a variable's literal value ("" when unset or from a ref).
func envValue(e *envVar) string {
	if e == nil {
		return ""
	}
	return e.Value
}

// mountOf is the volume mount holding the file path, or nil.
func (c container) mountOf(path string) *volumeMount {
	for i, m := range c.VolumeMounts {
		if path != "" && strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

type volumeMount struct {
	Name      string `json:"name"`
	MountPath string `json:"mountPath"`
	SubPath   string `json:"subPath"`
}

type port struct {
	Name          string `json:"name"`
	ContainerPort int    `json:"containerPort"`
}

type envVar struct {
	Name      string `json:"name"`
	Value     string `json:"value"`
	ValueFrom *struct {
		SecretKeyRef *struct {
			Name string `json:"name"`
			Key  string `json:"key"`
		} `json:"secretKeyRef"`
	} `json:"valueFrom"`
}

type envFrom struct {
	ConfigMapRef *struct {
		Name string `json:"name"`
	} `json:"configMapRef"`
}

type probe struct {
	HTTPGet *struct {
		Path   string `json:"path"`
		Port   any    `json:"port"`
		Scheme string `json:"scheme"`
	} `json:"httpGet"`
}

type securityContext struct {
	RunAsNonRoot             *bool  `json:"runAsNonRoot"`
	RunAsUser                *int64 `json:"runAsUser"`
	ReadOnlyRootFilesystem   *bool  `json:"readOnlyRootFilesystem"`
	AllowPrivilegeEscalation *bool  `json:"allowPrivilegeEscalation"`
	Capabilities             *struct {
		Add  []string `json:"add"`
		Drop []string `json:"drop"`
	} `json:"capabilities"`
	SeccompProfile *struct {
		Type string `json:"type"`
	} `json:"seccompProfile"`
}

type scaleTargetRef struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

type hpa struct {
	Spec struct {
		ScaleTargetRef scaleTargetRef `json:"scaleTargetRef"`
		MinReplicas    *int32         `json:"minReplicas"`
		MaxReplicas    int32          `json:"maxReplicas"`
		Metrics        []hpaMetric    `json:"metrics"`
	} `json:"spec"`
}

type hpaMetric struct {
	Type     string `json:"type"`
	Resource *struct {
		Name string `json:"name"`
	} `json:"resource"`
}

type scaledObject struct {
	Spec struct {
		ScaleTargetRef  scaleTargetRef `json:"scaleTargetRef"`
		MinReplicaCount *int32         `json:"minReplicaCount"`
		MaxReplicaCount *int32         `json:"maxReplicaCount"`
		Triggers        []struct {
			Type              string            `json:"type"`
			Metadata          map[string]string `json:"metadata"`
			AuthenticationRef *struct {
				Name string `json:"name"`
			} `json:"authenticationRef"`
		} `json:"triggers"`
	} `json:"spec"`
}

type triggerAuth struct {
	Spec struct {
		PodIdentity *struct {
			Provider string `json:"provider"`
		} `json:"podIdentity"`
		SecretTargetRef []any `json:"secretTargetRef"`
		Env             []any `json:"env"`
	} `json:"spec"`
}

type service struct {
	Spec struct {
		Selector map[string]string `json:"selector"`
		Ports    []struct {
			Name       string `json:"name"`
			Port       any    `json:"port"`
			TargetPort any    `json:"targetPort"`
		} `json:"ports"`
	} `json:"spec"`
}

type secret struct {
	Data map[string]string `json:"data"`
}

type certificate struct {
	Spec struct {
		SecretName string   `json:"secretName"`
		DNSNames   []string `json:"dnsNames"`
		IssuerRef  struct {
			Name string `json:"name"`
			Kind string `json:"kind"`
		} `json:"issuerRef"`
	} `json:"spec"`
}
