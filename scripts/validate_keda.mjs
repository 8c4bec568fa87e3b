#!/usr/bin/env node
// Validates the KEDA ScaledObjects in rendered manifests (multi-document YAML files):
//   node scripts/validate_keda.mjs k8s-gpu.yaml [...]
// 1. each ScaledObject against KEDA's schema (npm kubernetes-models + @kubernetes-models/keda);
// 2. no unknown fields in spec (the schema alone lets them through);
// 3. every nats-jetstream trigger carries the metadata KEDA's scaler and our design need,
//    and its target is a Deployment rendered in the same file.
// Exit status 1 with one line per problem; 0 when every ScaledObject is valid.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1";

const SPEC_FIELDS = new Set([
  "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod", "idleReplicaCount",
  "minReplicaCount", "maxReplicaCount", "advanced", "triggers", "fallback",
]);
const JETSTREAM_REQUIRED = [
  "natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold", "activationLagThreshold",
];

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: validate_keda.mjs FILE.yaml [...]");
  process.exit(2);
}
const problems = [];
let count = 0;
for (const file of files) {
  const docs = [];
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    if (doc.errors.length) problems.push(`${file}: YAML: ${doc.errors[0].message}`);
    else if (doc.contents) docs.push(doc.toJS());
  }
  const deployments = new Set(
    docs.filter((d) => d?.kind === "Deployment").map((d) => `${d.metadata?.namespace}/${d.metadata?.name}`),
  );
  for (const obj of docs.filter((d) => d?.kind === "ScaledObject")) {
    count += 1;
    const ns = obj.metadata?.namespace;
    const where = `${file}: ScaledObject ${ns}/${obj.metadata?.name}`;
    try {
      new ScaledObject(obj).validate();
    } catch (err) {
      problems.push(`${where}: ${err.message}`);
      continue;
    }
    for (const key of Object.keys(obj.spec)) {
      if (!SPEC_FIELDS.has(key)) problems.push(`${where}: unknown field spec.${key}`);
    }
    const target = obj.spec.scaleTargetRef;
    if ((target.kind ?? "Deployment") === "Deployment" && !deployments.has(`${ns}/${target.name}`)) {
      problems.push(`${where}: scaleTargetRef names Deployment ${target.name}, which is not in ${file}`);
    }
    for (const [i, trigger] of obj.spec.triggers.entries()) {
      if (trigger.type !== "nats-jetstream") continue;
      const meta = trigger.metadata ?? {};
      for (const key of JETSTREAM_REQUIRED) {
        if (meta[key] === undefined || meta[key] === "") problems.push(`${where}: triggers[${i}].metadata.${key} is missing`);
      }
      const endpoint = `nats.${ns}.svc:8222`;
      if (meta.natsServerMonitoringEndpoint && !meta.natsServerMonitoringEndpoint.startsWith(`nats.${ns}.svc`)) {
        problems.push(`${where}: natsServerMonitoringEndpoint ${meta.natsServerMonitoringEndpoint}, expected ${endpoint}`);
      }
      if (meta.stream && meta.stream !== "GANFOLK_TASKS") problems.push(`${where}: stream ${meta.stream}, expected GANFOLK_TASKS`);
      if (meta.consumer && !/^stage-[a-z_]+$/.test(meta.consumer)) {
        problems.push(`${where}: consumer ${meta.consumer} is not a stage consumer (stage-<stage>)`);
      }
      for (const key of ["lagThreshold", "activationLagThreshold"]) {
        if (meta[key] !== undefined && !/^\d+$/.test(meta[key])) problems.push(`${where}: ${key} must be a whole number`);
      }
    }
  }
}
for (const p of problems) console.error(`FAIL ${p}`);
if (problems.length) process.exit(1);
console.log(`ok: ${count} ScaledObject(s) valid in ${files.join(", ")}`);
