//! Reads `template.yaml`: its resources, their properties, and CloudFormation's intrinsic
//! functions (`!Ref`, `!GetAtt`, `!Sub`, and their long forms).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde_yaml::Value;

pub struct Template {
    doc: Value,
    path: PathBuf,
}

/// A value with its intrinsic function recognised.
#[derive(Debug, Clone, PartialEq)]
pub enum Intrinsic {
    Literal(String),
    Ref(String),
    GetAtt(String, String),
    Sub(String),
}

impl Template {
    pub fn load(path: impl AsRef<Path>) -> Result<Template> {
        let path = path.as_ref().to_path_buf();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let doc =
            serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(Template { doc, path })
    }

    /// The workspace's own template.
    pub fn workspace() -> Result<Template> {
        Template::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `(logical id, type, properties)` of every resource, in template order.
    pub fn resources(&self) -> Vec<(String, String, &Value)> {
        let Some(resources) = self.doc.get("Resources").and_then(Value::as_mapping) else {
            return Vec::new();
        };
        resources
            .iter()
            .filter_map(|(id, body)| {
                let id = id.as_str()?.to_string();
                let kind = body.get("Type")?.as_str()?.to_string();
                Some((id, kind, body.get("Properties").unwrap_or(&Value::Null)))
            })
            .collect()
    }

    pub fn resources_of_type(&self, kind: &str) -> Vec<(String, &Value)> {
        self.resources()
            .into_iter()
            .filter(|(_, k, _)| k == kind)
            .map(|(id, _, props)| (id, props))
            .collect()
    }

    pub fn resource(&self, id: &str) -> Result<&Value> {
        self.doc
            .get("Resources")
            .and_then(|r| r.get(id))
            .ok_or_else(|| anyhow!("template.yaml has no resource {id}"))
    }

    pub fn resource_type(&self, id: &str) -> Option<String> {
        Some(self.resource(id).ok()?.get("Type")?.as_str()?.to_string())
    }

    pub fn parameter_default(&self, name: &str) -> Option<String> {
        let default = self.doc.get("Parameters")?.get(name)?.get("Default")?;
        scalar(default)
    }

    pub fn parameter_names(&self) -> Vec<String> {
        self.doc
            .get("Parameters")
            .and_then(Value::as_mapping)
            .map(|m| {
                m.keys()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn has_parameter(&self, name: &str) -> bool {
        self.doc
            .get("Parameters")
            .and_then(|p| p.get(name))
            .is_some()
    }

    /// Every event of every `AWS::Serverless::Function`, in template order.
    pub fn function_events(&self) -> Vec<FunctionEvent<'_>> {
        let mut found = Vec::new();
        for (function_id, props) in self.resources_of_type("AWS::Serverless::Function") {
            let Some(events) = props.get("Events").and_then(Value::as_mapping) else {
                continue;
            };
            for (name, event) in events {
                found.push(FunctionEvent {
                    function_id: function_id.clone(),
                    name: name.as_str().unwrap_or("?").to_string(),
                    kind: event.get("Type").and_then(scalar).unwrap_or_default(),
                    properties: event.get("Properties"),
                });
            }
        }
        found
    }

    /// The function-level defaults under `Globals.Function`.
    pub fn function_globals(&self) -> Option<&Value> {
        self.doc.get("Globals")?.get("Function")
    }
}

/// One entry of a function's `Events`.
pub struct FunctionEvent<'a> {
    pub function_id: String,
    pub name: String,
    pub kind: String,
    pub properties: Option<&'a Value>,
}

impl FunctionEvent<'_> {
    /// The event's `Properties`, an error naming the function when absent.
    pub fn require_properties(&self) -> Result<&Value> {
        self.properties.ok_or_else(|| {
            anyhow!(
                "{}: {} event {} without Properties",
                self.function_id,
                self.kind,
                self.name
            )
        })
    }
}

pub fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub fn intrinsic(value: &Value) -> Result<Intrinsic> {
    match value {
        Value::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let inner = &tagged.value;
            match tag.trim_start_matches('!') {
                "Ref" => Ok(Intrinsic::Ref(text(inner)?)),
                "GetAtt" => get_att(inner),
                "Sub" => Ok(Intrinsic::Sub(text(inner)?)),
                other => bail!("unsupported intrinsic function !{other}"),
            }
        }
        Value::Mapping(map) if map.len() == 1 => {
            let (key, inner) = map.iter().next().ok_or_else(|| anyhow!("empty mapping"))?;
            match key.as_str() {
                Some("Ref") => Ok(Intrinsic::Ref(text(inner)?)),
                Some("Fn::GetAtt") => get_att(inner),
                Some("Fn::Sub") => Ok(Intrinsic::Sub(text(inner)?)),
                Some(other) => bail!("unsupported intrinsic function {other}"),
                None => bail!("unreadable mapping"),
            }
        }
        other => scalar(other)
            .map(Intrinsic::Literal)
            .ok_or_else(|| anyhow!("expected a scalar or an intrinsic function, got {other:?}")),
    }
}

fn text(value: &Value) -> Result<String> {
    scalar(value).ok_or_else(|| anyhow!("expected text, got {value:?}"))
}

fn get_att(value: &Value) -> Result<Intrinsic> {
    match value {
        Value::String(s) => {
            let (id, attr) = s
                .split_once('.')
                .ok_or_else(|| anyhow!("!GetAtt {s} has no attribute"))?;
            Ok(Intrinsic::GetAtt(id.into(), attr.into()))
        }
        Value::Sequence(parts) if parts.len() == 2 => {
            Ok(Intrinsic::GetAtt(text(&parts[0])?, text(&parts[1])?))
        }
        other => bail!("unreadable !GetAtt {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Value {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn short_and_long_forms_of_intrinsics_are_recognised() {
        assert_eq!(
            intrinsic(&parse("!Ref TeardownQueue")).unwrap(),
            Intrinsic::Ref("TeardownQueue".into())
        );
        assert_eq!(
            intrinsic(&parse("!GetAtt Queue.Arn")).unwrap(),
            Intrinsic::GetAtt("Queue".into(), "Arn".into())
        );
        assert_eq!(
            intrinsic(&parse("{'Fn::GetAtt': [Queue, Arn]}")).unwrap(),
            Intrinsic::GetAtt("Queue".into(), "Arn".into())
        );
        assert_eq!(
            intrinsic(&parse("!Sub 'muchaw/${Stage}/x'")).unwrap(),
            Intrinsic::Sub("muchaw/${Stage}/x".into())
        );
        assert_eq!(
            intrinsic(&parse("10")).unwrap(),
            Intrinsic::Literal("10".into())
        );
    }

    #[test]
    fn the_workspace_template_declares_the_numbers_table() {
        let template = Template::workspace().unwrap();
        assert_eq!(
            template.resource_type("NumbersTable").as_deref(),
            Some("AWS::DynamoDB::Table")
        );
    }
}
