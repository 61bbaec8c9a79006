{# Money in the warehouse is major units as numeric(14,2) (data contract). #}
{% macro money(expression) -%}
    cast({{ expression }} as numeric(14,2))
{%- endmacro %}

{# Integer minor units (Stripe cents) to dollars, exactly: a decimal multiplication, because a
   division of decimals is a DOUBLE on fakesnow/DuckDB and would round through binary floats. #}
{% macro cents_to_dollars(expression) -%}
    cast(cast({{ expression }} as numeric(18,0)) * 0.01 as numeric(14,2))
{%- endmacro %}
