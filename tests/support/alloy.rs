//! A parser for the Alloy configuration syntax (blocks, attributes, literals, lists, objects, references and
//! function calls; its operators are refused rather than guessed at) and the schemas of the components this
//! project's config uses, taken from Alloy's sources (internal/component/pyroscope/{receive_http,write},
//! common/net and common/config, commit 66ebea85 of 2026-08-21) and kept as data in alloy-schemas.json next to
//! this file: every attribute and block name, which are required, their types, and which exports a reference may
//! name.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::OnceLock,
};

#[derive(Clone, Debug, PartialEq)]
enum Value {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
    List(Vec<Value>),
    Object(Vec<(String, Value)>),
    Ref(Vec<String>),
    Call(String, Vec<Value>),
}

#[derive(Debug)]
enum Stmt {
    Attr(String, Value, usize),
    Block(Block),
}

#[derive(Debug)]
struct Block {
    name: String,
    label: Option<String>,
    body: Vec<Stmt>,
    line: usize,
}

/// A component of the config as checked.
#[derive(Debug)]
pub struct Component {
    pub kind: String,
    pub label: String,
    /// Numbers by dotted path (`http.listen_port`).
    numbers: BTreeMap<String, f64>,
    /// Every reference in its arguments.
    pub references: Vec<String>,
    /// The variables its `sys.env` calls read.
    pub env_vars: BTreeSet<String>,
}

impl Component {
    pub fn number(&self, path: &str) -> Option<f64> {
        self.numbers.get(path).copied()
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Type {
    Str,
    Num,
    Bool,
    Duration,
    MapStr,
    MapListStr,
    ListStr,
    Receivers,
}

impl Type {
    /// A type as tests/support/alloy-schemas.json spells it.
    fn named(name: &str) -> Type {
        match name {
            "string" => Type::Str,
            "number" => Type::Num,
            "bool" => Type::Bool,
            "duration" => Type::Duration,
            "map(string)" => Type::MapStr,
            "map(list(string))" => Type::MapListStr,
            "list(string)" => Type::ListStr,
            "list(receiver)" => Type::Receivers,
            other => panic!("alloy-schemas.json: unknown type `{other}`"),
        }
    }
}

/// The attributes and blocks a block's body may hold.
struct Schema {
    /// name, type, required.
    attrs: Vec<(String, Type, bool)>,
    /// name, the schema of its body, repeatable.
    blocks: Vec<(String, String, bool)>,
}

/// The components the checker knows, and the schemas of their bodies, from tests/support/alloy-schemas.json.
struct Schemas {
    /// Component name → the name of its schema, and its exports of type ProfilesReceiver.
    components: BTreeMap<String, (String, Vec<String>)>,
    schemas: BTreeMap<String, Schema>,
}

fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let json: serde_json::Value =
            serde_json::from_str(include_str!("alloy-schemas.json")).expect("alloy-schemas.json is JSON");
        let members = |value: &serde_json::Value, key: &str| -> Vec<(String, String)> {
            let object = value[key].as_object().unwrap_or_else(|| panic!("alloy-schemas.json: no object `{key}`"));
            let text = |(name, v): (&String, &serde_json::Value)| {
                (name.clone(), v.as_str().unwrap_or_else(|| panic!("alloy-schemas.json: `{name}` is no string")).into())
            };
            object.iter().map(text).collect()
        };
        // `TYPE` or `TYPE required`, `SCHEMA` or `SCHEMA repeated`.
        let flagged = |spec: &str, flag: &str| match spec.strip_suffix(flag) {
            Some(rest) => (rest.trim_end().to_owned(), true),
            None => (spec.to_owned(), false),
        };
        let schemas = json["schemas"].as_object().expect("alloy-schemas.json: schemas");
        let schemas = schemas
            .iter()
            .map(|(name, schema)| {
                let attrs = members(schema, "attributes")
                    .into_iter()
                    .map(|(attr, spec)| {
                        let (ty, required) = flagged(&spec, "required");
                        (attr, Type::named(&ty), required)
                    })
                    .collect();
                let blocks = members(schema, "blocks")
                    .into_iter()
                    .map(|(block, spec)| {
                        let (inner, repeatable) = flagged(&spec, "repeated");
                        (block, inner, repeatable)
                    })
                    .collect();
                (name.clone(), Schema { attrs, blocks })
            })
            .collect::<BTreeMap<_, _>>();
        let components = json["components"].as_object().expect("alloy-schemas.json: components");
        let components = components
            .iter()
            .map(|(name, component)| {
                let schema = component["schema"].as_str().expect("a component's schema").to_owned();
                let exports = component["exports"].as_array().expect("a component's exports");
                let exports = exports.iter().map(|e| e.as_str().expect("an export name").to_owned()).collect();
                (name.clone(), (schema, exports))
            })
            .collect::<BTreeMap<_, _>>();
        for (schema, _) in components.values() {
            assert!(schemas.contains_key(schema), "alloy-schemas.json: no schema {schema}");
        }
        for (_, inner, _) in schemas.values().flat_map(|schema| &schema.blocks) {
            assert!(schemas.contains_key(inner), "alloy-schemas.json: no schema {inner}");
        }
        Schemas { components, schemas }
    })
}

/// Component name → its schema and its exports of type ProfilesReceiver.
fn component(name: &str) -> Option<(&'static Schema, &'static [String])> {
    let all = schemas();
    all.components.get(name).map(|(schema, exports)| (&all.schemas[schema], exports.as_slice()))
}

/// Parses and checks a whole config; the components on success, the first problem (with its line) otherwise.
pub fn check(text: &str) -> Result<Vec<Component>, String> {
    let body = Parser::new(text)?.body(true)?;
    let mut components = Vec::new();
    let mut seen = BTreeSet::new();
    for stmt in &body {
        let block = match stmt {
            Stmt::Block(block) => block,
            Stmt::Attr(name, _, line) => return Err(format!("line {line}: attribute `{name}` outside any block")),
        };
        let (schema, _) =
            component(&block.name).ok_or_else(|| format!("line {}: unknown component `{}`", block.line, block.name))?;
        let label =
            block.label.clone().ok_or_else(|| format!("line {}: `{}` needs a label", block.line, block.name))?;
        if !seen.insert((block.name.clone(), label.clone())) {
            return Err(format!("line {}: {} \"{label}\" is declared twice", block.line, block.name));
        }
        let mut c = Component {
            kind: block.name.clone(),
            label,
            numbers: BTreeMap::new(),
            references: Vec::new(),
            env_vars: BTreeSet::new(),
        };
        check_body(&block.body, schema, "", &mut c)?;
        components.push(c);
    }
    // References name a declared component and one of its exports.
    for c in &components {
        for reference in &c.references {
            let parts: Vec<&str> = reference.split('.').collect();
            let found = parts.len() >= 2
                && components.iter().any(|other| {
                    let kind_len = other.kind.split('.').count();
                    parts.len() == kind_len + 2
                        && parts[..kind_len].join(".") == other.kind
                        && parts[kind_len] == other.label
                        && component(&other.kind)
                            .is_some_and(|(_, exports)| exports.iter().any(|e| e == parts[kind_len + 1]))
                });
            if !found {
                return Err(format!("{} \"{}\": `{reference}` names no component export", c.kind, c.label));
            }
        }
    }
    Ok(components)
}

fn check_body(body: &[Stmt], schema: &Schema, path: &str, c: &mut Component) -> Result<(), String> {
    let mut present = BTreeSet::new();
    for stmt in body {
        match stmt {
            Stmt::Attr(name, value, line) => {
                let &(_, ty, _) = schema
                    .attrs
                    .iter()
                    .find(|(n, _, _)| n == name)
                    .ok_or_else(|| format!("line {line}: unknown attribute `{name}` in `{}`", where_(c, path)))?;
                if !present.insert(name.clone()) {
                    return Err(format!("line {line}: `{name}` is set twice"));
                }
                check_value(value, ty, c).map_err(|e| format!("line {line}: `{name}`: {e}"))?;
                if let Value::Num(n) = value {
                    c.numbers.insert(format!("{path}{name}"), *n);
                }
            }
            Stmt::Block(block) => {
                let (_, inner, repeatable) =
                    schema.blocks.iter().find(|(n, _, _)| *n == block.name).ok_or_else(|| {
                        format!("line {}: unknown block `{}` in `{}`", block.line, block.name, where_(c, path))
                    })?;
                if block.label.is_some() {
                    return Err(format!("line {}: block `{}` takes no label", block.line, block.name));
                }
                if !present.insert(block.name.clone()) && !repeatable {
                    return Err(format!("line {}: block `{}` appears twice", block.line, block.name));
                }
                check_body(&block.body, &schemas().schemas[inner], &format!("{path}{}.", block.name), c)?;
            }
        }
    }
    for (name, _, required) in &schema.attrs {
        if *required && !present.contains(name) {
            return Err(format!("`{}` is missing the required attribute `{name}`", where_(c, path)));
        }
    }
    // basic_auth (common/config BasicAuth.Validate): at most one of password and password_file.
    if present.contains("password") && present.contains("password_file") {
        return Err(format!("`{}` sets both password and password_file", where_(c, path)));
    }
    Ok(())
}

fn where_(c: &Component, path: &str) -> String {
    format!("{} \"{}\" {}", c.kind, c.label, path.trim_end_matches('.'))
}

fn check_value(value: &Value, ty: Type, c: &mut Component) -> Result<(), String> {
    // The standard library functions that return a string.
    if let Value::Call(name, args) = value {
        if !matches!(name.as_str(), "sys.env" | "env") {
            return Err(format!("unknown function `{name}`"));
        }
        let [Value::Str(var)] = args.as_slice() else { return Err(format!("`{name}` takes one string")) };
        c.env_vars.insert(var.clone());
        return match ty {
            Type::Str | Type::Duration => Ok(()),
            _ => Err(format!("`{name}` returns a string, not {ty:?}")),
        };
    }
    let ok = match (ty, value) {
        (Type::Str, Value::Str(_)) | (Type::Num, Value::Num(_)) | (Type::Bool, Value::Bool(_)) => true,
        (Type::Duration, Value::Str(s)) => parse_duration(s),
        (Type::MapStr, Value::Object(fields)) => fields.iter().all(|(_, v)| matches!(v, Value::Str(_))),
        (Type::MapListStr, Value::Object(fields)) => fields
            .iter()
            .all(|(_, v)| matches!(v, Value::List(items) if items.iter().all(|i| matches!(i, Value::Str(_))))),
        (Type::ListStr, Value::List(items)) => items.iter().all(|i| matches!(i, Value::Str(_))),
        (Type::Receivers, Value::List(items)) => {
            for item in items {
                let Value::Ref(parts) = item else { return Err("a list of component exports".into()) };
                c.references.push(parts.join("."));
            }
            true
        }
        (_, Value::Null) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("expected {ty:?}, got {value:?}"))
    }
}

/// Go's time.ParseDuration: one or more decimal numbers each with a unit.
fn parse_duration(text: &str) -> bool {
    let mut rest = text;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ns", "us", "µs", "ms", "s", "m", "h"].iter().find(|u| rest.starts_with(**u));
        let Some(unit) = unit else { return false };
        rest = &rest[unit.len()..];
    }
    true
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Num(f64),
    Punct(char),
    Eof,
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    pos: usize,
}

impl Parser {
    fn new(text: &str) -> Result<Parser, String> {
        let mut tokens = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        let (mut i, mut line) = (0, 1);
        while i < chars.len() {
            let c = chars[i];
            match c {
                '\n' => {
                    line += 1;
                    i += 1;
                }
                c if c.is_whitespace() => i += 1,
                '/' if chars.get(i + 1) == Some(&'/') => {
                    while i < chars.len() && chars[i] != '\n' {
                        i += 1;
                    }
                }
                '/' if chars.get(i + 1) == Some(&'*') => {
                    i += 2;
                    while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                        line += usize::from(chars[i] == '\n');
                        i += 1;
                    }
                    if i + 1 >= chars.len() {
                        return Err(format!("line {line}: unterminated comment"));
                    }
                    i += 2;
                }
                '"' => {
                    let mut s = String::new();
                    i += 1;
                    loop {
                        match chars.get(i) {
                            None | Some('\n') => return Err(format!("line {line}: unterminated string")),
                            Some('"') => break,
                            Some('\\') => {
                                s.push(match chars.get(i + 1) {
                                    Some('n') => '\n',
                                    Some('t') => '\t',
                                    Some('\\') => '\\',
                                    Some('"') => '"',
                                    other => return Err(format!("line {line}: bad escape {other:?}")),
                                });
                                i += 2;
                            }
                            Some(&c) => {
                                s.push(c);
                                i += 1;
                            }
                        }
                    }
                    i += 1;
                    tokens.push((Token::Str(s), line));
                }
                c if c.is_ascii_digit() => {
                    let start = i;
                    while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                        i += 1;
                    }
                    let text: String = chars[start..i].iter().collect();
                    let n = text.parse().map_err(|_| format!("line {line}: bad number {text}"))?;
                    tokens.push((Token::Num(n), line));
                }
                c if c.is_ascii_alphabetic() || c == '_' => {
                    let start = i;
                    while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                        i += 1;
                    }
                    tokens.push((Token::Ident(chars[start..i].iter().collect()), line));
                }
                '{' | '}' | '[' | ']' | '(' | ')' | '=' | ',' | '.' => {
                    tokens.push((Token::Punct(c), line));
                    i += 1;
                }
                other => return Err(format!("line {line}: `{other}` (operators are not supported by this checker)")),
            }
        }
        tokens.push((Token::Eof, line));
        Ok(Parser { tokens, pos: 0 })
    }

    fn peek(&self) -> &Token {
        &self.tokens[self.pos].0
    }

    fn line(&self) -> usize {
        self.tokens[self.pos].1
    }

    fn next(&mut self) -> Token {
        let token = self.tokens[self.pos].0.clone();
        if token != Token::Eof {
            self.pos += 1;
        }
        token
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        match self.next() {
            Token::Punct(p) if p == c => Ok(()),
            Token::Eof => Err(format!("line {}: unexpected end of file, expected `{c}`", self.line())),
            other => Err(format!("line {}: expected `{c}`, found {other:?}", self.line())),
        }
    }

    fn ident(&mut self) -> Result<String, String> {
        match self.next() {
            Token::Ident(name) => Ok(name),
            Token::Eof => Err(format!("line {}: unexpected end of file", self.line())),
            other => Err(format!("line {}: expected a name, found {other:?}", self.line())),
        }
    }

    /// Statements up to `}` (or the end of file at the top level).
    fn body(&mut self, top: bool) -> Result<Vec<Stmt>, String> {
        let mut stmts = Vec::new();
        loop {
            match self.peek() {
                Token::Eof if top => return Ok(stmts),
                Token::Eof => return Err(format!("line {}: unexpected end of file, expected `}}`", self.line())),
                Token::Punct('}') if !top => {
                    self.next();
                    return Ok(stmts);
                }
                _ => {}
            }
            let line = self.line();
            let mut name = self.ident()?;
            while self.peek() == &Token::Punct('.') {
                self.next();
                name = format!("{name}.{}", self.ident()?);
            }
            match self.next() {
                Token::Punct('=') if !name.contains('.') => {
                    let value = self.value()?;
                    stmts.push(Stmt::Attr(name, value, line));
                }
                Token::Punct('{') => {
                    stmts.push(Stmt::Block(Block { name, label: None, body: self.body(false)?, line }))
                }
                Token::Str(label) => {
                    self.expect('{')?;
                    stmts.push(Stmt::Block(Block { name, label: Some(label), body: self.body(false)?, line }));
                }
                other => return Err(format!("line {line}: after `{name}`: unexpected {other:?}")),
            }
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        let line = self.line();
        let value = match self.next() {
            Token::Str(s) => Value::Str(s),
            Token::Num(n) => Value::Num(n),
            Token::Ident(word) => match word.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                _ => {
                    let mut parts = vec![word];
                    while self.peek() == &Token::Punct('.') {
                        self.next();
                        parts.push(self.ident()?);
                    }
                    if self.peek() == &Token::Punct('(') {
                        self.next();
                        let args = self.list(')')?;
                        Value::Call(parts.join("."), args)
                    } else {
                        Value::Ref(parts)
                    }
                }
            },
            Token::Punct('[') => Value::List(self.list(']')?),
            Token::Punct('{') => {
                let mut fields = Vec::new();
                loop {
                    if self.peek() == &Token::Punct('}') {
                        self.next();
                        break;
                    }
                    let key = match self.next() {
                        Token::Ident(k) | Token::Str(k) => k,
                        other => return Err(format!("line {line}: object key expected, found {other:?}")),
                    };
                    self.expect('=')?;
                    fields.push((key, self.value()?));
                    match self.next() {
                        Token::Punct(',') => {}
                        Token::Punct('}') => break,
                        other => return Err(format!("line {line}: expected `,` or `}}`, found {other:?}")),
                    }
                }
                Value::Object(fields)
            }
            Token::Eof => return Err(format!("line {line}: unexpected end of file")),
            other => return Err(format!("line {line}: a value expected, found {other:?}")),
        };
        Ok(value)
    }

    /// Comma-separated values up to `close` (a trailing comma allowed).
    fn list(&mut self, close: char) -> Result<Vec<Value>, String> {
        let mut items = Vec::new();
        loop {
            if self.peek() == &Token::Punct(close) {
                self.next();
                return Ok(items);
            }
            items.push(self.value()?);
            match self.next() {
                Token::Punct(',') => {}
                Token::Punct(c) if c == close => return Ok(items),
                other => return Err(format!("line {}: expected `,` or `{close}`, found {other:?}", self.line())),
            }
        }
    }
}
