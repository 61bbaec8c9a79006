{#
  The data contract's definitions, each written once and used by every model that needs it
  (docs/contract.md at the repository's root, "Definitions").
#}

{# An order is *counted* when its status <> 'cancelled'. #}
{% macro is_counted_order(status_column) -%}
    ({{ status_column }} <> 'cancelled')
{%- endmacro %}

{# paid(charge) = (amount - amount_refunded) when status = 'succeeded', else 0; in dollars. #}
{% macro charge_paid_amount(status_column, amount_column, amount_refunded_column) -%}
    case when {{ status_column }} = 'succeeded'
         then {{ amount_column }} - {{ amount_refunded_column }}
         else 0 end
{%- endmacro %}
