{# Money in the warehouse is major units as numeric(14,2) (data contract). #}
{% macro money(expression) -%}
    cast({{ expression }} as numeric(14,2))
{%- endmacro %}

{# Integer minor units (Stripe cents) to dollars, exactly: a decimal multiplication, because a
   division of decimals is a DOUBLE on fakesnow/DuckDB and would round through binary floats. #}
{% macro cents_to_dollars(expression) -%}
    cast(cast({{ expression }} as numeric(18,0)) * 0.01 as numeric(14,2))
{%- endmacro %}

{# Exact sums. SUM over a bare NUMBER column returns a DOUBLE on fakesnow (0.12.1) — e.g. 3140.38
   comes back as 3140.3799999999997 — while SUM over a CAST expression keeps the decimal type; the
   inner cast is a no-op on Postgres and on real Snowflake, so every sum goes through these. #}
{% macro sum_money(expression) -%}
    cast(sum(cast({{ expression }} as numeric(38,2))) as numeric(14,2))
{%- endmacro %}

{% macro sum_integer(expression) -%}
    cast(sum(cast({{ expression }} as bigint)) as bigint)
{%- endmacro %}
