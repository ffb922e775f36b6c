"""Small JSON schemas (draft 2020-12) for the custom resources in deploy/k8s/, written from what the operators
document: Strimzi's `kafka.strimzi.io/v1beta2` API reference (Kafka, KafkaNodePool, KafkaTopic) and KubeRay's
`ray.io/v1` RayService / RayCluster API. They cover the fields sidstream uses, with their types, enums and the
fields the operators require; elsewhere they stay open (`additionalProperties` is false only for objects whose
full field list is documented and small: Strimzi listeners and storage volumes, KubeRay worker groups).

Pod templates inside a RayService are not described here: the tests validate them with the official Kubernetes
schema (as a v1 PodTemplate) through kubernetes-validate. Kafka broker/topic config *values* follow Kafka's own
documentation (e.g. cleanup.policy).
"""
from __future__ import annotations

K8S_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
            "maxLength": 253}
QUANTITY = {"type": ["string", "integer", "number"]}
# Kafka configuration maps: strings, numbers or booleans (Strimzi passes them through to the broker/topic)
CONFIG_VALUE = {"type": ["string", "integer", "number", "boolean"]}


def _metadata(*, cluster_label: bool = False) -> dict:
    schema = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": K8S_NAME,
            "namespace": K8S_NAME,
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    if cluster_label:  # node pools and topics name their Kafka cluster with this label (the operator needs it)
        schema["properties"]["labels"]["required"] = ["strimzi.io/cluster"]
        schema["required"] = ["name", "labels"]
    return schema


def _resource(api_version: str, kind: str, spec: dict, **metadata) -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _metadata(**metadata),
            "spec": spec,
        },
        "additionalProperties": False,  # a Kubernetes object has no other top-level fields (status is the operator's)
    }


RESOURCES = {"type": "object", "properties": {"requests": {"type": "object", "additionalProperties": QUANTITY},
                                              "limits": {"type": "object", "additionalProperties": QUANTITY}},
             "additionalProperties": False}

# ----- Strimzi: storage (EphemeralStorage, PersistentClaimStorage, JbodStorage)
_EPHEMERAL = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"const": "ephemeral"}, "id": {"type": "integer", "minimum": 0},
                   "sizeLimit": {"type": "string"}, "kraftMetadata": {"enum": ["shared"]}},
    "additionalProperties": False,
}
_PERSISTENT_CLAIM = {
    "type": "object",
    "required": ["type", "size"],  # size: "mandatory when type=persistent-claim"
    "properties": {"type": {"const": "persistent-claim"}, "id": {"type": "integer", "minimum": 0},
                   "size": {"type": "string", "pattern": r"^[0-9]+([.][0-9]+)?([KMGTPE]i?)?$"},
                   "class": {"type": "string"}, "selector": {"type": "object"},
                   "deleteClaim": {"type": "boolean"}, "overrides": {"type": "array"},
                   "kraftMetadata": {"enum": ["shared"]}},
    "additionalProperties": False,
}
_JBOD = {
    "type": "object",
    "required": ["type", "volumes"],
    "properties": {
        "type": {"const": "jbod"},
        # every JBOD volume needs its id (the operator names the PVCs after it)
        "volumes": {"type": "array", "minItems": 1,
                    "items": {"oneOf": [{**_EPHEMERAL, "required": ["type", "id"]},
                                        {**_PERSISTENT_CLAIM, "required": ["type", "size", "id"]}]}},
    },
    "additionalProperties": False,
}
STORAGE = {"type": "object", "required": ["type"],
           "properties": {"type": {"enum": ["ephemeral", "persistent-claim", "jbod"]}},
           "oneOf": [_EPHEMERAL, _PERSISTENT_CLAIM, _JBOD]}

KAFKA_NODE_POOL = _resource("kafka.strimzi.io/v1beta2", "KafkaNodePool", {
    "type": "object",
    "required": ["replicas", "storage", "roles"],
    "properties": {
        "replicas": {"type": "integer", "minimum": 0},
        "roles": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": ["controller", "broker"]}},
        "storage": STORAGE,
        "resources": RESOURCES,
        "jvmOptions": {"type": "object", "properties": {"-Xms": {"type": "string", "pattern": r"^[0-9]+[mMgG]?$"},
                                                        "-Xmx": {"type": "string", "pattern": r"^[0-9]+[mMgG]?$"}}},
        "template": {"type": "object"},
    },
    "additionalProperties": False,
}, cluster_label=True)

# ----- Strimzi: Kafka
LISTENER = {
    "type": "object",
    "required": ["name", "port", "type", "tls"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]{1,11}$"},  # lower-case letters and digits, <= 11
        "port": {"type": "integer", "minimum": 9092, "not": {"enum": [9404, 9999]}},  # reserved by Strimzi
        "type": {"enum": ["internal", "route", "loadbalancer", "nodeport", "ingress", "cluster-ip"]},
        "tls": {"type": "boolean"},
        "authentication": {"type": "object", "required": ["type"],
                           "properties": {"type": {"enum": ["tls", "scram-sha-512", "oauth", "custom"]}}},
        "configuration": {"type": "object"},
        "networkPolicyPeers": {"type": "array"},
    },
    "additionalProperties": False,
}
KAFKA = _resource("kafka.strimzi.io/v1beta2", "Kafka", {
    "type": "object",
    "required": ["kafka"],
    "properties": {
        "kafka": {
            "type": "object",
            "required": ["listeners"],
            "properties": {
                "version": {"type": "string", "pattern": r"^[0-9]+\.[0-9]+\.[0-9]+$"},
                "metadataVersion": {"type": "string", "pattern": r"^[0-9]+\.[0-9]+(-IV[0-9]+)?$"},
                "replicas": {"type": "integer", "minimum": 1},
                "listeners": {"type": "array", "minItems": 1, "items": LISTENER},
                "config": {"type": "object", "additionalProperties": CONFIG_VALUE},
                "storage": STORAGE,
                "authorization": {"type": "object"},
                "rack": {"type": "object"},
                "resources": RESOURCES,
                "jvmOptions": {"type": "object"},
                "template": {"type": "object"},
                "logging": {"type": "object"},
                "metricsConfig": {"type": "object"},
            },
        },
        "zookeeper": {"type": "object"},
        "entityOperator": {
            "type": "object",
            "properties": {"topicOperator": {"type": "object"}, "userOperator": {"type": "object"},
                           "tlsSidecar": {"type": "object"}, "template": {"type": "object"}},
            "additionalProperties": False,
        },
        "clusterCa": {"type": "object"},
        "clientsCa": {"type": "object"},
        "cruiseControl": {"type": "object"},
        "kafkaExporter": {"type": "object"},
        "maintenanceTimeWindows": {"type": "array", "items": {"type": "string"}},
    },
})

# ----- Strimzi: KafkaTopic (partitions/replicas are optional for the operator: the broker defaults apply)
TOPIC_CONFIG = {
    "type": "object",
    "properties": {
        # Kafka's topic-level cleanup.policy: a list of delete and/or compact
        "cleanup.policy": {"enum": ["delete", "compact", "compact,delete", "delete,compact"]},
        "min.insync.replicas": {"type": ["integer", "string"], "pattern": r"^[0-9]+$", "minimum": 1},
        "retention.ms": {"type": ["integer", "string"], "pattern": r"^-?[0-9]+$"},
    },
    "additionalProperties": CONFIG_VALUE,
}
KAFKA_TOPIC = _resource("kafka.strimzi.io/v1beta2", "KafkaTopic", {
    "type": "object",
    "properties": {
        "topicName": {"type": "string", "pattern": r"^[a-zA-Z0-9._-]{1,249}$"},  # Kafka's legal topic names
        "partitions": {"type": "integer", "minimum": 1},
        "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
        "config": TOPIC_CONFIG,
    },
    "additionalProperties": False,
}, cluster_label=True)

# ----- KubeRay: RayService (ray.io/v1) with its RayClusterSpec
RAY_START_PARAMS = {"type": "object", "additionalProperties": {"type": "string"}}  # map[string]string in Go
POD_TEMPLATE = {"type": "object", "required": ["spec"],
                "properties": {"metadata": {"type": "object"}, "spec": {"type": "object", "required": ["containers"]}}}
HEAD_GROUP = {
    "type": "object",
    "required": ["template"],
    "properties": {
        "rayStartParams": RAY_START_PARAMS,
        "template": POD_TEMPLATE,
        "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
        "enableIngress": {"type": "boolean"},
        "headService": {"type": "object"},
    },
}
WORKER_GROUP = {
    "type": "object",
    "required": ["groupName", "template"],
    "properties": {
        "groupName": {"type": "string", "minLength": 1},
        "replicas": {"type": "integer", "minimum": 0},
        "minReplicas": {"type": "integer", "minimum": 0},
        "maxReplicas": {"type": "integer", "minimum": 0},
        "numOfHosts": {"type": "integer", "minimum": 1},
        "rayStartParams": RAY_START_PARAMS,
        "template": POD_TEMPLATE,
        "scaleStrategy": {"type": "object"},
        "suspend": {"type": "boolean"},
        "idleTimeoutSeconds": {"type": "integer"},
    },
    "additionalProperties": False,
}
RAY_CLUSTER_SPEC = {
    "type": "object",
    "required": ["headGroupSpec"],
    "properties": {
        "rayVersion": {"type": "string"},
        "enableInTreeAutoscaling": {"type": "boolean"},
        "autoscalerOptions": {
            "type": "object",
            "properties": {"upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
                           "idleTimeoutSeconds": {"type": "integer", "minimum": 0},
                           "resources": RESOURCES, "image": {"type": "string"},
                           "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                           "env": {"type": "array"}, "envFrom": {"type": "array"},
                           "securityContext": {"type": "object"}, "volumeMounts": {"type": "array"},
                           "version": {"enum": ["v1", "v2"]}},
        },
        "headGroupSpec": HEAD_GROUP,
        "workerGroupSpecs": {"type": "array", "items": WORKER_GROUP},
        "headServiceAnnotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "suspend": {"type": "boolean"},
        "gcsFaultToleranceOptions": {"type": "object"},
        "managedBy": {"type": "string"},
    },
}
RAY_SERVICE = _resource("ray.io/v1", "RayService", {
    "type": "object",
    # rayClusterConfig: what the operator runs; serveConfigV2: the Serve config (a YAML string) it deploys
    "required": ["serveConfigV2", "rayClusterConfig"],
    "properties": {
        "serveConfigV2": {"type": "string", "minLength": 1},
        "rayClusterConfig": RAY_CLUSTER_SPEC,
        "upgradeStrategy": {"type": "object",
                            "properties": {"type": {"enum": ["NewCluster", "None",
                                                             "NewClusterWithIncrementalUpgrade"]}}},
        "serviceUnhealthySecondThreshold": {"type": "integer"},
        "deploymentUnhealthySecondThreshold": {"type": "integer"},
        "excludeHeadPodFromServeSvc": {"type": "boolean"},
        "serveService": {"type": "object"},
    },
})

# (apiVersion, kind) -> schema
SCHEMAS = {
    ("kafka.strimzi.io/v1beta2", "Kafka"): KAFKA,
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"): KAFKA_NODE_POOL,
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): KAFKA_TOPIC,
    ("ray.io/v1", "RayService"): RAY_SERVICE,
}
