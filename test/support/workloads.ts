/**
 * The workloads e2e tests scale, as YAML for `applyYaml`: a Deployment of imaginary pods
 * (the stand-in kubelet plays them where a test starts it) and an autoscaling/v2 HPA on it,
 * or a ScalableWorkload that writes its own HPA.
 */

/** A Deployment `name` whose pods are labelled `app: name`. */
export const deploymentYaml = (name: string, replicas = 1) => `apiVersion: apps/v1
kind: Deployment
metadata: {name: ${name}}
spec:
  replicas: ${replicas}
  selector: {matchLabels: {app: ${name}}}
  template: {metadata: {labels: {app: ${name}}}, spec: {containers: [{name: app, image: example.invalid/${name}}]}}
`;

/** An HPA named `name` on the Deployment `name`; `metrics` and `behavior` as YAML flow text. */
export const hpaYaml = (
  name: string,
  o: { minReplicas?: number; maxReplicas: number; metrics: string; behavior?: string },
) => `apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: ${name}}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: ${name}}
  minReplicas: ${o.minReplicas ?? 1}
  maxReplicas: ${o.maxReplicas}
  metrics: ${o.metrics}
${o.behavior ? `  behavior: ${o.behavior}\n` : ""}`;

/** One External metric with an `averageValue` target, as `metrics` YAML. */
export const externalAverage = (metric: string, averageValue: string) =>
  `[{type: External, external: {metric: {name: ${metric}}, target: {type: AverageValue, averageValue: "${averageValue}"}}}]`;

/**
 * A ScalableWorkload `name` of a placeholder pod template whose HPA Governor writes from
 * `metrics` (a YAML list of `{mapping, target}`), scaling down without a stabilization window.
 */
export const autoscaledWorkload = (name: string, metrics: string) => `apiVersion: governor.dev/v1alpha1
kind: ScalableWorkload
metadata: {name: ${name}}
spec:
  replicas: 1
  selector: {matchLabels: {app: ${name}}}
  template:
    metadata: {labels: {app: ${name}}}
    spec: {containers: [{name: ${name}, image: example.invalid/${name}}]}
  autoscaling:
    minReplicas: 1
    maxReplicas: 10
    metrics: ${metrics}
    behavior: {scaleDown: {stabilizationWindowSeconds: 0}}
`;
