//! Each payload object is declared once, with `payload_object!`: a line per field gives its
//! type, how it is normalized and the payload key(s) it comes from. The struct (fields in
//! that order, then `extra`), the shape the reader fills (its keys sorted as Comm100 sends
//! them), the normalizer (taking each key by its place in the shape) and the JSON Schema
//! (each field's doc comment its description) follow from it.

/// How the payload key of a field is read, by the field's normalizer: nested objects are
/// read against their shape, everything else as plain JSON.
macro_rules! kind_of {
    (custom_fields) => {
        Kind::Objects(&CustomField::SHAPE)
    };
    (custom_variables) => {
        Kind::Objects(&CustomVariable::SHAPE)
    };
    (attachments) => {
        Kind::Objects(&Attachment::SHAPE)
    };
    (wrapup) => {
        Kind::Object(&Wrapup::SHAPE)
    };
    ($rule:ident) => {
        Kind::Json
    };
}

/// Declares a payload object: `field: Type = rule("key", …),` per field, where `rule` is the
/// [`Fields`] method that normalizes the key(s) into the field; `derived` fields are set by
/// the `then` block from the others.
macro_rules! payload_object {
    (
        $(#[doc = $doc:literal])*
        $name:ident {
            $(
                $(#[doc = $field_doc:literal])*
                $field:ident: $ty:ty = $rule:ident($($key:literal),*),
            )+
        }
        $(then |$object:ident| $then:block)?
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, PartialEq, Serialize)]
        pub struct $name<'a> {
            $($(#[doc = $field_doc])* pub $field: $ty,)+
            #[serde(skip_serializing_if = "Map::is_empty")]
            pub extra: Map<String, Value>,
        }

        impl<'a> $name<'a> {
            /// The keys read from the payload.
            pub(crate) const SHAPE: Shape = Shape {
                keys: &sorted([$($(($key, kind_of!($rule)),)*)+]),
            };

            pub(crate) fn normalize(mut f: Fields<'a, '_>) -> Self {
                #[allow(unused_mut)]
                let mut object = Self {
                    $($field: payload_object!(@take f $name $rule $($key),*),)+
                    extra: f.finish(),
                };
                $(let $object = &mut object; $then)?
                object
            }
        }

        impl<'a> $crate::event::schema::Describe for $name<'a> {
            fn describe(defs: &mut $crate::event::schema::Defs) -> Value {
                use $crate::event::schema::{def_name, doc, object, refine, Describe};
                defs.refer(&def_name(stringify!($name)), |defs| {
                    let properties = vec![$((
                        stringify!($field),
                        doc(&[$($field_doc),*]),
                        refine(stringify!($rule), <$ty as Describe>::describe(defs)),
                    ),)+];
                    object(&doc(&[$($doc),*]), properties, true, defs)
                })
            }
        }
    };
    (@take $f:ident $name:ident derived) => {
        Default::default()
    };
    (@take $f:ident $name:ident $rule:ident $($key:literal),+) => {
        $f.$rule($(const { $name::SHAPE.key($key) }),+)
    };
}
