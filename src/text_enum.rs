//! Enums whose values are words: stored as text in PostgreSQL, written as the same text in JSON
//! and logs. Each variant names its word once, in the macro call that defines the enum.

/// A word that names no variant of the enum it was read as.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a known value")]
pub struct UnknownWord(pub String);

/// Defines an enum of words: `as_str`, `Display`, `FromStr`, serde, and text in PostgreSQL.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident = $word:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }

            /// `values` as an SQL list of literals, `('A', 'B')`, for queries that name them.
            pub fn sql_list(values: &[$name]) -> String {
                let words: Vec<String> = values.iter().map(|v| format!("'{}'", v.as_str())).collect();
                format!("({})", words.join(", "))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::text_enum::UnknownWord;

            fn from_str(word: &str) -> Result<Self, Self::Err> {
                match word {
                    $($word => Ok($name::$variant),)+
                    other => Err($crate::text_enum::UnknownWord(other.to_owned())),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let word = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                word.parse().map_err(serde::de::Error::custom)
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl sqlx::Encode<'_, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl sqlx::Decode<'_, sqlx::Postgres> for $name {
            fn decode(value: sqlx::postgres::PgValueRef<'_>) -> Result<Self, sqlx::error::BoxDynError> {
                let word = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Ok(word.parse()?)
            }
        }
    };
}

pub(crate) use text_enum;

#[cfg(test)]
mod tests {
    text_enum! {
        enum Colour {
            Red = "red",
            DarkBlue = "dark_blue",
        }
    }

    #[test]
    fn words_go_both_ways() {
        assert_eq!(Colour::DarkBlue.as_str(), "dark_blue");
        assert_eq!("red".parse::<Colour>().unwrap(), Colour::Red);
        assert!("Red".parse::<Colour>().is_err());
        assert_eq!(serde_json::to_string(&Colour::Red).unwrap(), "\"red\"");
        let back: Colour = serde_json::from_str("\"dark_blue\"").unwrap();
        assert_eq!(back, Colour::DarkBlue);
        assert_eq!(Colour::sql_list(Colour::ALL), "('red', 'dark_blue')");
    }
}
